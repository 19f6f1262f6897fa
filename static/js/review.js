/*
 * Review screen: wires the viewer to the toolbar, the per-image decision panels and the keyboard.
 * Shortcuts: C confirm, X correct, N save and next, H heat-map, I invert, B draw box, Del remove box,
 * + / - zoom, 0 fit, [ / ] previous / next image.
 */
(function () {
  "use strict";

  var root = document.getElementById("viewer");
  if (!root || !window.FractureViewer) return;

  var form = document.getElementById("review-form");
  var panels = Array.prototype.slice.call(document.querySelectorAll(".image-panel"));
  var thumbs = Array.prototype.slice.call(document.querySelectorAll(".thumb"));
  var errorBox = document.getElementById("form-error");
  var saveNext = document.getElementById("save-next");
  var drawToggle = document.getElementById("draw-toggle");
  var heatToggle = document.getElementById("heatmap-toggle");
  var invertBtn = document.querySelector('[data-action="invert"]');
  var level = document.getElementById("wl-level");
  var windowWidth = document.getElementById("wl-window");
  var opacity = document.getElementById("heatmap-opacity");
  var editable = !!saveNext;
  var current = 0;

  function parseRegion(text) {
    if (!text) return null;
    try {
      var r = JSON.parse(text);
      return r && typeof r.x === "number" ? r : null;
    } catch (err) {
      return null;
    }
  }

  function pct(v) {
    return (v * 100).toFixed(1) + "%";
  }

  function regionInput(panel) {
    return panel.querySelector(".region-input");
  }

  function showRegion(panel, box) {
    var readout = panel.querySelector(".region-readout");
    if (!readout) return;
    readout.textContent = box
      ? "Box: x " + pct(box.x) + ", y " + pct(box.y) + ", " + pct(box.w) + " × " + pct(box.h)
      : "No box drawn.";
  }

  var viewer = new window.FractureViewer(root, {
    stage: document.getElementById("viewer-stage"),
    canvas: document.getElementById("viewer-canvas"),
    heatmap: document.getElementById("viewer-heatmap"),
    status: document.getElementById("viewer-status"),
    box: document.getElementById("viewer-box"),
    priorBoxes: { 1: document.getElementById("prior-box-1"), 2: document.getElementById("prior-box-2") },
    drawEnabled: editable,
    onBox: function (box) {
      var panel = panels[current];
      var input = regionInput(panel);
      if (input) input.value = box ? JSON.stringify(box) : "";
      showRegion(panel, box);
    },
  });

  function selectImage(index) {
    if (!panels.length) return;
    current = (index + panels.length) % panels.length;
    panels.forEach(function (panel, i) {
      panel.classList.toggle("inactive", i !== current && panels.length > 1);
    });
    thumbs.forEach(function (thumb, i) {
      thumb.setAttribute("aria-selected", i === current ? "true" : "false");
    });
    var panel = panels[current];
    viewer.load(panel.dataset.imageUrl, panel.dataset.heatmapUrl);
    heatToggle.disabled = !panel.dataset.heatmapUrl;
    var input = regionInput(panel);
    var box = input ? parseRegion(input.value) : parseRegion(panel.dataset.finalRegion || "");
    viewer.setBox(box);
    var priors = {};
    panel.querySelectorAll("tr[data-region]").forEach(function (row) {
      priors[row.dataset.read] = parseRegion(row.dataset.region);
    });
    viewer.setPriorBoxes(priors);
  }

  function setPressed(button, on) {
    if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function decide(decision) {
    var panel = panels[current];
    var radio = panel && panel.querySelector('input[data-decision="' + decision + '"]');
    if (radio) {
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  function toggleDraw(force) {
    var on = viewer.setDrawMode(force === undefined ? !viewer.drawMode : force);
    setPressed(drawToggle, on);
  }

  function clearBox() {
    if (!editable) return;
    viewer.setBox(null);
    var panel = panels[current];
    var input = regionInput(panel);
    if (input) input.value = "";
    showRegion(panel, null);
  }

  function missingDecision() {
    for (var i = 0; i < panels.length; i++) {
      var panel = panels[i];
      var radios = panel.querySelectorAll('input[type="radio"]');
      var select = panel.querySelector("select");
      var done = radios.length
        ? Array.prototype.some.call(radios, function (r) { return r.checked; })
        : select && select.value;
      if (!done) return i;
    }
    return -1;
  }

  document.querySelectorAll(".viewer-toolbar [data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      switch (button.dataset.action) {
        case "zoom-in": viewer.zoomBy(1.25); break;
        case "zoom-out": viewer.zoomBy(0.8); break;
        case "reset": viewer.reset(); break;
        case "invert": setPressed(invertBtn, viewer.toggleInvert()); break;
        case "heatmap": setPressed(heatToggle, viewer.toggleHeatmap()); break;
        case "draw": toggleDraw(); break;
        case "clear-box": clearBox(); break;
      }
    });
  });
  function onWindow() {
    viewer.setWindow(Number(level.value), Number(windowWidth.value));
  }
  level.addEventListener("input", onWindow);
  windowWidth.addEventListener("input", onWindow);
  opacity.addEventListener("input", function () {
    viewer.setHeatmapOpacity(Number(opacity.value) / 100);
  });
  thumbs.forEach(function (thumb) {
    thumb.addEventListener("click", function () { selectImage(Number(thumb.dataset.imageIndex)); });
  });

  if (form && editable) {
    form.addEventListener("change", function () {
      if (missingDecision() < 0) errorBox.hidden = true;
    });
    form.addEventListener("submit", function (e) {
      var missing = missingDecision();
      if (missing >= 0) {
        e.preventDefault();
        selectImage(missing);
        errorBox.textContent = panels.length > 1
          ? "Image " + (missing + 1) + " has no decision yet: confirm (C) or correct (X)."
          : "Choose a decision first: confirm (C) or correct (X).";
        errorBox.hidden = false;
      }
    });
  }

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
        (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "range"))) return;
    var key = e.key;
    var handled = true;
    switch (key) {
      case "c": case "C": if (editable) decide("confirm"); else handled = false; break;
      case "x": case "X": if (editable) decide("correct"); else handled = false; break;
      case "n": case "N":
        if (editable && form) {
          if (form.requestSubmit) form.requestSubmit(saveNext); else saveNext.click();
        } else handled = false;
        break;
      case "h": case "H": setPressed(heatToggle, viewer.toggleHeatmap()); break;
      case "i": case "I": setPressed(invertBtn, viewer.toggleInvert()); break;
      case "b": case "B": if (editable) toggleDraw(); else handled = false; break;
      case "Delete": case "Backspace": if (editable) clearBox(); else handled = false; break;
      case "+": case "=": viewer.zoomBy(1.25); break;
      case "-": case "_": viewer.zoomBy(0.8); break;
      case "0": viewer.reset(); break;
      case "[": selectImage(current - 1); break;
      case "]": selectImage(current + 1); break;
      default: handled = false;
    }
    if (handled) e.preventDefault();
  });

  /* Keep the claim while the reader works: renew it every third of its lifetime (at most every
     five minutes) if there was a key press or pointer action since the last renewal. */
  var renewUrl = form && form.dataset.renewUrl;
  if (renewUrl) {
    var ttl = Number(form.dataset.claimTtl) || 900;
    var active = false;
    var lost = document.getElementById("claim-lost");
    var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    ["keydown", "pointerdown", "wheel"].forEach(function (type) {
      document.addEventListener(type, function () { active = true; }, { passive: true });
    });
    var timer = window.setInterval(function () {
      if (!active) return;
      active = false;
      fetch(renewUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": token, "Accept": "application/json" },
      }).then(function (response) {
        if (response.ok) return;
        return response.json().then(function (body) {
          window.clearInterval(timer);
          lost.textContent = body.message || "Your claim on this case has lapsed.";
          lost.hidden = false;
          if (saveNext) saveNext.disabled = true;
          var save = document.getElementById("save");
          if (save) save.disabled = true;
        });
      }).catch(function () { active = true; }); // offline for a moment: try again next time
    }, Math.min(ttl / 3, 300) * 1000);
  }

  selectImage(0);
})();
