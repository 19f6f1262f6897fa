/* Review screen: the model's suspected fracture sites (its candidates) as a read-only layer of the
   viewer, with the "Model marks" toggle. Each image panel carries its candidates in
   data-candidates (pixel boxes of the canonical image, best first); they are drawn whenever the
   viewer loads that panel's image. No inline script or style (CSP). */
(function () {
  "use strict";

  var LAYER = "model";

  function candidatesOf(panel) {
    try {
      var boxes = JSON.parse(panel.dataset.candidates || "[]");
      return Array.isArray(boxes) ? boxes : [];
    } catch (err) {
      return [];
    }
  }

  /* Draw the panel's candidates on the viewer (read-only; none for a classifier-only model) and
     enable the toggle only when there is something to show. Returns the number drawn. */
  function showModelMarks(viewer, panel, toggle) {
    var boxes = panel ? candidatesOf(panel) : [];
    viewer.setBoxLayer(LAYER, boxes, "box-candidate");
    if (toggle) {
      toggle.disabled = !boxes.length;
      toggle.setAttribute("aria-pressed", viewer.layerVisible(LAYER) ? "true" : "false");
    }
    return boxes.length;
  }

  function init() {
    var viewer = window.reviewViewer;
    var root = document.getElementById("viewer");
    if (!viewer || !root) return;
    var toggle = document.getElementById("marks-toggle");
    var panels = Array.prototype.slice.call(document.querySelectorAll(".image-panel"));
    function panelFor(imageUrl) {
      for (var i = 0; i < panels.length; i++) {
        if (panels[i].dataset.imageUrl === imageUrl) return panels[i];
      }
      return null;
    }
    root.addEventListener("viewer:load", function (e) {
      showModelMarks(viewer, panelFor(e.detail.imageUrl), toggle);
    });
    function flip() {
      if (!toggle || toggle.disabled) return false;
      var on = viewer.setLayerVisible(LAYER, !viewer.layerVisible(LAYER));
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      return true;
    }
    if (toggle) toggle.addEventListener("click", flip);
    // K toggles the marks, as H does the heat-map (not while typing in a field).
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (e.ctrlKey || e.metaKey || e.altKey || (e.key !== "k" && e.key !== "K")) return;
      if (t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
          (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "range"))) return;
      if (flip()) e.preventDefault();
    });
    // review.js loaded the first image before this script ran: draw that panel's marks.
    var shown = panels.filter(function (p) { return !p.classList.contains("inactive"); })[0] || panels[0];
    if (shown) showModelMarks(viewer, shown, toggle);
  }

  window.FractureModelMarks = { show: showModelMarks, layer: LAYER };
  init();
})();
