/* Case page: live progress while the model works (polls the status JSON), each image's result
   shown as it arrives (the page is fetched again and the changed parts swapped in, no reload),
   heat-map and model-marks controls.
   No inline script or style attributes (CSP): sizes and opacities are set through the CSSOM. */
(function () {
  "use strict";

  /* True when every pixel of a loaded RGBA heat-map is fully transparent (sampled at most
     256 x 256): Grad-CAM found nothing that raised the fracture score. */
  function heatmapIsEmpty(img) {
    var w = Math.min(img.naturalWidth, 256);
    var h = Math.min(img.naturalHeight, 256);
    if (!w || !h) { return false; }
    var canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    var ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, w, h);
    var px = ctx.getImageData(0, 0, w, h).data;
    for (var i = 3; i < px.length; i += 4) {
      if (px[i] > 0) { return false; }
    }
    return true;
  }
  window.FractureHeatmapIsEmpty = heatmapIsEmpty;

  function markEmpty(figure, heatmap) {
    function check() {
      var empty = heatmapIsEmpty(heatmap);
      var note = figure.querySelector(".heatmap-empty-note");
      if (note) { note.hidden = !empty; }
      figure.classList.toggle("heatmap-empty", empty);
    }
    if (heatmap.complete && heatmap.naturalWidth) { check(); } else { heatmap.addEventListener("load", check); }
  }

  /* A box layer drawn by the server as an SVG (the model's marks, the radiologists' boxes):
     shown or hidden with its checkbox in the figure. */
  function initLayerToggle(figure, layerSelector, toggleSelector) {
    var layer = figure.querySelector(layerSelector);
    var toggle = figure.querySelector(toggleSelector);
    if (!layer || !toggle) { return; }
    function apply() { layer.classList.toggle("hidden", !toggle.checked); }
    toggle.addEventListener("change", apply);
    apply();
  }

  function initFigure(figure) {
    if (figure.dataset.controlsReady) { return; }
    figure.dataset.controlsReady = "1";
    initLayerToggle(figure, "svg.model-marks", ".marks-toggle");
    initLayerToggle(figure, "svg.reader-boxes", ".reader-toggle");
    var heatmap = figure.querySelector("img.heatmap");
    var toggle = figure.querySelector(".heatmap-toggle");
    var slider = figure.querySelector(".heatmap-opacity");
    if (!heatmap) { return; }
    function apply() {
      var visible = !toggle || toggle.checked;
      heatmap.classList.toggle("hidden", !visible);
      if (slider) { heatmap.style.opacity = String(Number(slider.value) / 100); }
    }
    if (toggle) { toggle.addEventListener("change", apply); }
    if (slider) { slider.addEventListener("input", apply); }
    apply();
    markEmpty(figure, heatmap);
  }

  function initHeatmapControls(root) {
    root.querySelectorAll("figure.result").forEach(initFigure);
  }

  /* Swap the element with this id for its counterpart in the freshly rendered page: replaced,
     removed when the page no longer has it, or added before `before` when it is new. */
  function swapById(doc, id, before) {
    var current = document.getElementById(id);
    var fresh = doc.getElementById(id);
    if (current && fresh) {
      current.replaceWith(document.importNode(fresh, true));
    } else if (current) {
      current.remove();
    } else if (fresh && before) {
      before.before(document.importNode(fresh, true));
    }
  }

  /* Show the results that arrived without reloading the page: fetch the page as the server now
     renders it and replace, in place, the parts that changed: the headline, the status and
     actions, the progress or failure notice, the radiologist's reading, and each image whose
     prediction changed state (its result, heat-map and marks). Images whose state is unchanged
     keep their element, so focus and toggles stay where the user left them. */
  function refresh(root) {
    return fetch(window.location.href, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      cache: "no-store",
    })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("case-results");
        if (!fresh) { throw new Error("no results in the page"); }
        swapById(doc, "case-headline");
        swapById(doc, "case-actions");
        swapById(doc, "review-result", root);  // the radiologist's section comes before the images
        var state = root.querySelector("#results-state");
        var freshState = fresh.querySelector("#results-state");
        if (state && freshState) { state.replaceWith(document.importNode(freshState, true)); }
        fresh.querySelectorAll("figure.result").forEach(function (figure) {
          var current = document.getElementById(figure.id);
          if (current && current.dataset.state === figure.dataset.state) { return; }
          var node = document.importNode(figure, true);
          if (current) { current.replaceWith(node); } else { root.querySelector(".image-grid").appendChild(node); }
          initFigure(node);
        });
        root.dataset.status = fresh.dataset.status;
        root.dataset.inFlight = fresh.dataset.inFlight;
        return fresh.dataset.inFlight === "1";
      });
  }

  function setProgress(root, data) {
    var bar = root.querySelector("#prediction-progress-bar");
    var text = root.querySelector("#prediction-progress-text");
    var percent = data ? data.progress.percent : Number(bar && bar.dataset.percent || 0);
    if (bar) {
      // An indeterminate sliver while nothing is finished yet, so the page visibly works.
      bar.style.width = Math.max(percent, 4) + "%";
      bar.classList.toggle("indeterminate", percent === 0);
    }
    if (text && data) {
      var phase = { received: "Received", queued: "Queued for the model", predicting: "Predicting" }[data.status] || data.status_display;
      var reason = data.status === "received" && data.reason ? ": " + data.reason : "";
      text.textContent = phase + reason + " · " + data.progress.done + " of " + data.progress.total +
        " image" + (data.progress.total === 1 ? "" : "s") + " done";
    }
    var badge = document.getElementById("case-status");
    if (badge && data) {
      badge.textContent = data.status_display;
      badge.className = "status status-" + data.status;
    }
  }

  /* The prediction status an image's figure shows ("done", "running", ... or "none"). */
  function shownStatus(imageId) {
    var figure = document.getElementById("image-" + imageId);
    var state = figure ? figure.dataset.state || "none" : "none";
    return state === "none" ? state : state.slice(state.indexOf("-") + 1);
  }

  function poll(root) {
    var url = root.dataset.statusUrl;
    var delay = 1500;
    var lastStatus = root.dataset.status;
    function schedule() { window.setTimeout(tick, delay); }
    function tick() {
      if (document.hidden) { schedule(); return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 404 || response.status === 403) { throw new Error("gone"); }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          delay = data.poll_ms || 1500;
          setProgress(root, data);
          var arrived = data.images.some(function (image) {
            var finished = image.prediction === "done" || image.prediction === "failed";
            return finished && shownStatus(image.id) !== image.prediction;
          });
          var failed = data.status !== lastStatus && data.status === "failed";
          lastStatus = data.status;
          if (!arrived && !failed && data.in_flight) { schedule(); return; }
          // A result arrived (or the case finished or failed): show it in place.
          refresh(root).then(function (stillInFlight) {
            setProgress(root, null);
            if (stillInFlight) { schedule(); }
          }).catch(function () {
            window.location.reload();  // the server renders the results
          });
        })
        .catch(function (error) {
          if (error && error.message === "gone") { return; }
          delay = Math.min(delay * 2, 15000);  // back off while the server is unreachable
          schedule();
        });
    }
    schedule();
  }

  /* Back from an image's viewer (its Close link or Esc lead to #open-viewer-<id>): that image's
     "Open viewer" button has the focus again. */
  function focusViewerButton() {
    var match = /^#open-viewer-(\d+)$/.exec(window.location.hash);
    var button = match && document.getElementById("open-viewer-" + match[1]);
    if (button) { button.focus(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusViewerButton();
    var root = document.getElementById("case-results");
    if (!root) { return; }
    initHeatmapControls(root);
    setProgress(root, null);
    if (root.dataset.inFlight === "1" && root.dataset.statusUrl) { poll(root); }
  });
})();
