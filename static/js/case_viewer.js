/*
 * The clinician's read-only viewer of one radiograph (diagnosis/image_viewer.html): the review
 * screen's viewer (viewer.js) with its windowing (full depth where the image has it), zoom, pan,
 * invert, the heat-map and two read-only box layers: the model's marks and, once the case's
 * reading is final, the radiologists' final boxes. No editing. Esc (or "Close viewer") goes back
 * to the case page, whose "Open viewer" button for this image takes the focus again.
 * Data from the JSON script #viewer-data (CSP: no inline script or style).
 */
(function () {
  "use strict";

  var root = document.getElementById("viewer");
  var dataEl = document.getElementById("viewer-data");
  if (!root || !dataEl || !window.FractureViewer) return;

  var data = {};
  try {
    data = JSON.parse(dataEl.textContent) || {};
  } catch (err) {
    data = {};
  }

  var level = document.getElementById("wl-level");
  var windowWidth = document.getElementById("wl-window");
  var preset = document.getElementById("wl-preset");
  var opacity = document.getElementById("heatmap-opacity");
  var heatToggle = document.getElementById("heatmap-toggle");
  var marksToggle = document.getElementById("marks-toggle");
  var finalToggle = document.getElementById("final-toggle");
  var invertBtn = document.getElementById("invert-toggle");
  var windowToggle = document.getElementById("window-toggle");
  var closeLink = document.getElementById("viewer-close");

  function setPressed(button, on) {
    if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  /* The level/window sliders range over the values being windowed, and the readout shows them. */
  function syncWindowControls(v) {
    var limits = v.windowLimits();
    [[level, limits.levelMin, limits.levelMax], [windowWidth, limits.widthMin, limits.widthMax]].forEach(function (entry) {
      var input = entry[0];
      if (Number(input.min) !== entry[1]) input.min = entry[1];
      if (Number(input.max) !== entry[2]) input.max = entry[2];
      if (Number(input.step) !== limits.step) input.step = limits.step;
    });
    if (Number(level.value) !== v.level) level.value = v.level;
    if (Number(windowWidth.value) !== v.window) windowWidth.value = v.window;
    var readout = document.getElementById("wl-readout");
    if (readout) readout.textContent = (v.isFullDepth() ? "Full depth · " : "8-bit display · ") + v.windowText();
  }

  var viewer = new window.FractureViewer(root, {
    stage: document.getElementById("viewer-stage"),
    canvas: document.getElementById("viewer-canvas"),
    heatmap: document.getElementById("viewer-heatmap"),
    status: document.getElementById("viewer-status"),
    layers: document.getElementById("viewer-layers"),
    drawEnabled: false,
    onChange: syncWindowControls,
  });
  window.caseViewer = viewer; // for the browser tests

  function boxes(list) {
    return (Array.isArray(list) ? list : []).filter(function (b) {
      return b && typeof b.x0 === "number" && b.x1 > b.x0 && b.y1 > b.y0;
    });
  }

  // Box layers belong to one image: set them each time it loads (load() announces itself).
  root.addEventListener("viewer:load", function () {
    viewer.setBoxLayer("model", boxes(data.marks), "box-candidate");
    viewer.setBoxLayer("final", boxes(data.final), "box-final");
  });
  viewer.setHeatmapOpacity(Number(opacity.value) / 100);
  viewer.load(data.image || "", data.heatmap || "");
  if (data.depth) viewer.loadDepth(data.depth.url, data.depth.params);

  function toggleLayer(name, button) {
    if (!button || button.disabled) return false;
    setPressed(button, viewer.setLayerVisible(name, !viewer.layerVisible(name)));
    return true;
  }

  function toggleHeatmap() {
    if (heatToggle.disabled) return false;
    setPressed(heatToggle, viewer.toggleHeatmap());
    return true;
  }

  function setMode(mode) {
    setPressed(windowToggle, viewer.setMode(mode) === "window");
  }

  function close() {
    if (closeLink) window.location.assign(closeLink.href);
  }

  document.querySelectorAll(".viewer-toolbar [data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      switch (button.dataset.action) {
        case "zoom-in": viewer.zoomBy(1.25); break;
        case "zoom-out": viewer.zoomBy(0.8); break;
        case "reset": viewer.reset(); break;
        case "actual": viewer.actualSize(); break;
        case "invert": setPressed(invertBtn, viewer.toggleInvert()); break;
        case "window-drag": setMode("window"); break;
        case "heatmap": toggleHeatmap(); break;
        case "marks": toggleLayer("model", marksToggle); break;
        case "final": toggleLayer("final", finalToggle); break;
      }
    });
  });

  function onWindow() {
    viewer.setWindow(Number(level.value), Number(windowWidth.value));
  }
  function onSlider() {
    preset.value = ""; // the window is the reader's own now, no longer the preset's
    onWindow();
  }
  level.addEventListener("input", onSlider);
  windowWidth.addEventListener("input", onSlider);
  preset.addEventListener("change", function () {
    if (!preset.value) return;
    if (viewer.applyPreset(preset.options[preset.selectedIndex].dataset.preset)) return;
    var parts = preset.value.split(",").map(Number);
    level.value = parts[0];
    windowWidth.value = parts[1];
    onWindow();
  });
  opacity.addEventListener("input", function () {
    viewer.setHeatmapOpacity(Number(opacity.value) / 100);
  });

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape") {
      // a select's own Esc closes its list first
      if (t && t.tagName === "SELECT") return;
      e.preventDefault();
      close();
      return;
    }
    if (t && (t.tagName === "SELECT" || (t.tagName === "INPUT" && t.type !== "range"))) return;
    var handled = true;
    switch (e.key) {
      case "+": case "=": viewer.zoomBy(1.25); break;
      case "-": case "_": viewer.zoomBy(0.8); break;
      case "0": viewer.reset(); break;
      case "i": case "I": setPressed(invertBtn, viewer.toggleInvert()); break;
      case "w": case "W": setMode("window"); break;
      case "h": case "H": handled = toggleHeatmap(); break;
      case "k": case "K": handled = toggleLayer("model", marksToggle); break;
      case "r": case "R": handled = toggleLayer("final", finalToggle); break;
      default: handled = false;
    }
    if (handled) e.preventDefault();
  });

  root.focus();
})();
