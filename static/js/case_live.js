/* Case page: live progress while the model works (polls the status JSON), heat-map controls.
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

  function initHeatmapControls(root) {
    root.querySelectorAll("figure.result").forEach(function (figure) {
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
          if (!data.in_flight || (data.status !== lastStatus && data.status === "failed")) {
            window.location.reload();  // the server renders the final results
            return;
          }
          lastStatus = data.status;
          schedule();
        })
        .catch(function (error) {
          if (error && error.message === "gone") { return; }
          delay = Math.min(delay * 2, 15000);  // back off while the server is unreachable
          schedule();
        });
    }
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("case-results");
    if (!root) { return; }
    initHeatmapControls(root);
    setProgress(root, null);
    if (root.dataset.inFlight === "1" && root.dataset.statusUrl) { poll(root); }
  });
})();
