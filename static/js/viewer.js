/*
 * Radiograph viewer: zoom and pan (CSS transform), window/level and invert (canvas lookup table),
 * Grad-CAM heat-map overlay (RGBA PNG, opacity and toggle), and a region box drawn by dragging,
 * reported as fractions {x, y, w, h} of the image. Dragging pans, windows (window mode: left/right
 * changes the width, up/down the level, as in PACS viewers) or measures a distance (measure mode:
 * millimetres from the image's pixel spacing when known, image pixels otherwise, labelled as such).
 * Extra overlays (e.g. model candidate boxes) go through setBoxLayer(name, boxes, className) after
 * load() (each load announces itself with a "viewer:load" event on the root element) and are shown
 * or hidden with setLayerVisible(name, on).
 *
 * No inline styles or scripts (the Content-Security-Policy forbids them): this file sets style
 * properties through the CSSOM and SVG attributes only.
 */
(function () {
  "use strict";

  var MIN_BOX = 0.005; // smaller drags are clicks, not boxes

  function clamp(v, lo, hi) {
    return Math.min(hi, Math.max(lo, v));
  }

  function Viewer(root, options) {
    this.root = root;
    this.stage = options.stage;
    this.canvas = options.canvas;
    this.heatmap = options.heatmap;
    this.status = options.status;
    this.boxEl = options.box;
    this.priorEls = options.priorBoxes || {};
    this.layersEl = options.layers || null;
    this.boxLayers = {}; // name -> {boxes, className}: redrawn when an image loads
    this.layerVisibility = {}; // name -> false while hidden (kept across images)
    this.measureEl = options.measureLine || null;
    this.onMeasure = options.onMeasure || function () {};
    this.mode = "pan"; // pan | window | measure (drawing a box is drawMode)
    this.spacing = null; // [row, column] mm per pixel, or null
    this.onBox = options.onBox || function () {};
    this.onChange = options.onChange || function () {};
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.gray = null;
    this.imageData = null;
    this.naturalW = 0;
    this.naturalH = 0;
    this.scale = 1;
    this.fitScale = 1;
    this.tx = 0;
    this.ty = 0;
    this.level = 128;
    this.window = 255;
    this.inverted = false;
    this.heatmapOn = true;
    this.heatmapAvailable = false;
    this.opacity = 0.4;
    this.drawMode = false;
    this.drawEnabled = !!options.drawEnabled;
    this.box = null;
    this.drag = null;
    this.pending = false;
    this.loadToken = 0;
    this._bind();
  }

  Viewer.prototype._bind = function () {
    var self = this;
    this.root.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = self.root.getBoundingClientRect();
      self.zoomBy(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    this.root.addEventListener("pointerdown", function (e) {
      if (e.button !== 0 || !self.naturalW) return;
      self.root.focus();
      self.root.setPointerCapture(e.pointerId);
      if (self.drawEnabled && (self.drawMode || e.shiftKey)) {
        var p = self.toFraction(e.clientX, e.clientY);
        self.drag = { kind: "box", x0: p.x, y0: p.y };
        self.root.classList.add("drawing");
      } else if (self.mode === "measure") {
        var q = self.toFraction(e.clientX, e.clientY);
        self.drag = { kind: "measure", x0: q.x, y0: q.y };
      } else if (self.mode === "window") {
        self.drag = { kind: "window", x: e.clientX, y: e.clientY, level: self.level, window: self.window };
      } else {
        self.drag = { kind: "pan", x: e.clientX, y: e.clientY, tx: self.tx, ty: self.ty };
        self.root.classList.add("panning");
      }
    });
    this.root.addEventListener("pointermove", function (e) {
      if (!self.drag) return;
      if (self.drag.kind === "pan") {
        self.tx = self.drag.tx + (e.clientX - self.drag.x);
        self.ty = self.drag.ty + (e.clientY - self.drag.y);
        self._applyTransform();
      } else if (self.drag.kind === "window") {
        self.setWindow(self.drag.level - (e.clientY - self.drag.y), self.drag.window + (e.clientX - self.drag.x));
      } else if (self.drag.kind === "measure") {
        var m = self.toFraction(e.clientX, e.clientY);
        self.setMeasure({ x0: self.drag.x0, y0: self.drag.y0, x1: m.x, y1: m.y });
      } else {
        var p = self.toFraction(e.clientX, e.clientY);
        self._drawBox(self._boxFrom(self.drag.x0, self.drag.y0, p.x, p.y));
      }
    });
    function end(e) {
      if (!self.drag) return;
      var drag = self.drag;
      self.drag = null;
      self.root.classList.remove("panning");
      self.root.classList.remove("drawing");
      if (drag.kind === "window") self.onChange(self);
      if (drag.kind === "measure") {
        var m = self.toFraction(e.clientX, e.clientY);
        self.setMeasure({ x0: drag.x0, y0: drag.y0, x1: m.x, y1: m.y });
      }
      if (drag.kind === "box") {
        var p = self.toFraction(e.clientX, e.clientY);
        var box = self._boxFrom(drag.x0, drag.y0, p.x, p.y);
        if (box.w < MIN_BOX || box.h < MIN_BOX) {
          self._drawBox(self.box); // a click: keep the previous box
        } else {
          self.setBox(box);
          self.onBox(self.box);
        }
      }
    }
    this.root.addEventListener("pointerup", end);
    this.root.addEventListener("pointercancel", end);
    window.addEventListener("resize", function () { self.reset(); });
  };

  Viewer.prototype._boxFrom = function (x0, y0, x1, y1) {
    var round = function (v) { return Math.round(v * 100000) / 100000; };
    return {
      x: round(Math.min(x0, x1)),
      y: round(Math.min(y0, y1)),
      w: round(Math.abs(x1 - x0)),
      h: round(Math.abs(y1 - y0)),
    };
  };

  /* Client coordinates -> fractions of the image (the stage's box already includes the transform). */
  Viewer.prototype.toFraction = function (clientX, clientY) {
    var r = this.stage.getBoundingClientRect();
    return {
      x: clamp((clientX - r.left) / r.width, 0, 1),
      y: clamp((clientY - r.top) / r.height, 0, 1),
    };
  };

  Viewer.prototype.load = function (imageUrl, heatmapUrl) {
    var self = this;
    var token = ++this.loadToken;
    delete this.root.dataset.loaded;
    this.setMeasure(null);
    this._clearLayers(); // box layers belong to one image
    this.gray = null;
    this.naturalW = 0;
    this.status.textContent = imageUrl ? "Loading image…" : "No image file available.";
    this.heatmapAvailable = false;
    this.heatmap.hidden = true;
    if (heatmapUrl) {
      this.heatmap.onload = function () {
        if (token !== self.loadToken) return;
        self.heatmapAvailable = true;
        self._applyHeatmap();
      };
      this.heatmap.onerror = function () {
        self.heatmapAvailable = false;
        self._applyHeatmap();
      };
      this.heatmap.src = heatmapUrl;
    } else {
      this.heatmap.removeAttribute("src");
      this._applyHeatmap();
    }
    // Scripts that add overlays (e.g. the model's marks) set them for the new image here.
    this.root.dispatchEvent(new CustomEvent("viewer:load", { detail: { imageUrl: imageUrl } }));
    if (!imageUrl) return;
    var img = new Image();
    img.onload = function () {
      if (token !== self.loadToken) return;
      self._setImage(img);
    };
    img.onerror = function () {
      if (token === self.loadToken) self.status.textContent = "The image could not be loaded.";
    };
    img.src = imageUrl;
  };

  Viewer.prototype._setImage = function (img) {
    this.naturalW = img.naturalWidth;
    this.naturalH = img.naturalHeight;
    this.canvas.width = this.naturalW;
    this.canvas.height = this.naturalH;
    this.stage.style.width = this.naturalW + "px";
    this.stage.style.height = this.naturalH + "px";
    this.ctx.drawImage(img, 0, 0);
    try {
      var data = this.ctx.getImageData(0, 0, this.naturalW, this.naturalH);
      var n = this.naturalW * this.naturalH;
      this.gray = new Uint8ClampedArray(n);
      for (var i = 0; i < n; i++) this.gray[i] = data.data[i * 4];
      this.imageData = data;
    } catch (err) {
      this.gray = null; // pixels unreadable: fall back to CSS filters
    }
    this.reset();
    this._render();
    this._drawLayers();
    this.root.dataset.loaded = "1";
  };

  Viewer.prototype._render = function () {
    var self = this;
    if (this.pending) return;
    this.pending = true;
    window.requestAnimationFrame(function () {
      self.pending = false;
      self._paint();
    });
  };

  Viewer.prototype._paint = function () {
    if (!this.naturalW) return;
    if (this.gray) {
      var lut = new Uint8ClampedArray(256);
      var lo = this.level - this.window / 2;
      for (var v = 0; v < 256; v++) {
        var out = ((v - lo) / this.window) * 255;
        out = clamp(Math.round(out), 0, 255);
        lut[v] = this.inverted ? 255 - out : out;
      }
      var px = this.imageData.data;
      var g = this.gray;
      for (var i = 0, j = 0; i < g.length; i++, j += 4) {
        var o = lut[g[i]];
        px[j] = o;
        px[j + 1] = o;
        px[j + 2] = o;
        px[j + 3] = 255;
      }
      this.ctx.putImageData(this.imageData, 0, 0);
    } else {
      var contrast = 255 / this.window;
      var brightness = 1 + (128 - this.level) / 128;
      this.canvas.style.filter = "brightness(" + brightness + ") contrast(" + contrast + ")" +
        (this.inverted ? " invert(1)" : "");
    }
    this._updateStatus();
  };

  Viewer.prototype._updateStatus = function () {
    if (!this.naturalW) return;
    this.status.textContent = "Zoom " + Math.round(this.scale * 100) + "% · level " + this.level +
      " · window " + this.window + (this.inverted ? " · inverted" : "");
    this.onChange(this);
  };

  Viewer.prototype._applyTransform = function () {
    this.stage.style.transform = "translate(" + this.tx + "px, " + this.ty + "px) scale(" + this.scale + ")";
    // Keep box outlines about 2 screen pixels wide whatever the zoom.
    this.stage.style.setProperty("--box-stroke", (2 / this.scale).toFixed(3) + "px");
    // Box labels are drawn in image pixels: about 13 screen pixels high whatever the zoom.
    this.stage.style.setProperty("--box-label-size", (13 / this.scale).toFixed(3) + "px");
    this.stage.style.setProperty("--box-label-outline", (3 / this.scale).toFixed(3) + "px");
    this._updateStatus();
  };

  Viewer.prototype.reset = function () {
    if (!this.naturalW) return;
    var vw = this.root.clientWidth;
    var vh = this.root.clientHeight;
    this.fitScale = Math.min(vw / this.naturalW, vh / this.naturalH);
    this.scale = this.fitScale;
    this.tx = (vw - this.naturalW * this.scale) / 2;
    this.ty = (vh - this.naturalH * this.scale) / 2;
    this._applyTransform();
  };

  Viewer.prototype.zoomBy = function (factor, cx, cy) {
    if (!this.naturalW) return;
    if (cx === undefined) {
      cx = this.root.clientWidth / 2;
      cy = this.root.clientHeight / 2;
    }
    var next = clamp(this.scale * factor, this.fitScale * 0.5, this.fitScale * 20);
    var f = next / this.scale;
    this.tx = cx - (cx - this.tx) * f;
    this.ty = cy - (cy - this.ty) * f;
    this.scale = next;
    this._applyTransform();
  };

  /* One image pixel per screen pixel, centred. */
  Viewer.prototype.actualSize = function () {
    if (!this.naturalW) return;
    this.zoomBy(1 / this.scale);
  };

  Viewer.prototype.setMode = function (mode) {
    this.mode = this.mode === mode ? "pan" : mode;
    this.root.classList.toggle("window-mode", this.mode === "window");
    this.root.classList.toggle("measure-mode", this.mode === "measure");
    return this.mode;
  };

  /* mm per pixel as [row, column] (DICOM PixelSpacing order), or null for pixels only. */
  Viewer.prototype.setSpacing = function (spacing) {
    this.spacing = spacing && spacing.length === 2 && spacing[0] > 0 && spacing[1] > 0 ? spacing : null;
  };

  /* A measured segment in fractions of the image -> {pixels, mm (or null), text}. */
  Viewer.prototype.measure = function (seg) {
    var dx = (seg.x1 - seg.x0) * this.naturalW;
    var dy = (seg.y1 - seg.y0) * this.naturalH;
    var pixels = Math.sqrt(dx * dx + dy * dy);
    var mm = this.spacing ? Math.sqrt(Math.pow(dx * this.spacing[1], 2) + Math.pow(dy * this.spacing[0], 2)) : null;
    var text = mm !== null ? mm.toFixed(1) + " mm" : Math.round(pixels) + " px (image pixels: no pixel spacing in this image)";
    return { pixels: pixels, mm: mm, text: text };
  };

  Viewer.prototype.setMeasure = function (seg) {
    var el = this.measureEl;
    if (!el) return null;
    if (!seg) {
      el.setAttribute("visibility", "hidden");
      this.onMeasure(null);
      return null;
    }
    el.setAttribute("x1", seg.x0);
    el.setAttribute("y1", seg.y0);
    el.setAttribute("x2", seg.x1);
    el.setAttribute("y2", seg.y1);
    el.setAttribute("visibility", "visible");
    var result = this.measure(seg);
    this.onMeasure(result);
    return result;
  };

  /* An overlay layer of boxes in image pixels ({x0, y0, x1, y1, score?}), drawn with className;
     a box with a score is labelled with it (two decimals). The layer belongs to the current image:
     set it after load() (it is drawn once the image has loaded, and removed by the next load());
     an empty list removes it. Layers stay hidden or shown as setLayerVisible left them. */
  Viewer.prototype.setBoxLayer = function (name, boxes, className) {
    if (!boxes || !boxes.length) {
      delete this.boxLayers[name];
    } else {
      this.boxLayers[name] = { boxes: boxes.slice(), className: className || "" };
    }
    this._drawLayer(name);
  };

  /* Show or hide a box layer (kept across images); returns whether it is shown. */
  Viewer.prototype.setLayerVisible = function (name, on) {
    this.layerVisibility[name] = !!on;
    var group = this.layersEl && this.layersEl.querySelector('g[data-layer="' + name + '"]');
    if (group) group.setAttribute("visibility", on ? "visible" : "hidden");
    return !!on;
  };

  Viewer.prototype.layerVisible = function (name) {
    return this.layerVisibility[name] !== false;
  };

  Viewer.prototype._clearLayers = function () {
    var self = this;
    Object.keys(this.boxLayers).forEach(function (name) {
      delete self.boxLayers[name];
      self._drawLayer(name);
    });
  };

  Viewer.prototype._drawLayers = function () {
    var self = this;
    Object.keys(this.boxLayers).forEach(function (name) { self._drawLayer(name); });
  };

  Viewer.prototype._drawLayer = function (name) {
    if (!this.layersEl) return;
    var ns = "http://www.w3.org/2000/svg";
    var group = this.layersEl.querySelector('g[data-layer="' + name + '"]');
    if (group) group.parentNode.removeChild(group);
    var layer = this.boxLayers[name];
    if (!layer || !this.naturalW) return;
    var w = this.naturalW;
    var h = this.naturalH;
    group = document.createElementNS(ns, "g");
    group.setAttribute("data-layer", name);
    group.setAttribute("visibility", this.layerVisible(name) ? "visible" : "hidden");
    // Labels in image pixels (uniform scale), so text keeps its shape on any image.
    var labels = document.createElementNS(ns, "g");
    labels.setAttribute("transform", "scale(" + 1 / w + " " + 1 / h + ")");
    layer.boxes.forEach(function (b, index) {
      var rect = document.createElementNS(ns, "rect");
      rect.setAttribute("class", "box " + layer.className);
      rect.setAttribute("x", b.x0 / w);
      rect.setAttribute("y", b.y0 / h);
      rect.setAttribute("width", (b.x1 - b.x0) / w);
      rect.setAttribute("height", (b.y1 - b.y0) / h);
      rect.setAttribute("data-rank", index + 1);
      if (b.score !== undefined && b.score !== null) {
        rect.setAttribute("data-score", b.score);
        var text = document.createElementNS(ns, "text");
        text.setAttribute("class", "box-label" + (layer.className ? " " + layer.className + "-label" : ""));
        text.setAttribute("x", b.x0);
        // Above the box, or just inside its top edge when the box touches the image's top.
        var inside = b.y0 < 0.04 * h;
        text.setAttribute("y", b.y0);
        text.setAttribute("dominant-baseline", inside ? "text-before-edge" : "text-after-edge");
        text.textContent = Number(b.score).toFixed(2);
        labels.appendChild(text);
      }
      group.appendChild(rect);
    });
    group.appendChild(labels);
    this.layersEl.appendChild(group);
  };

  Viewer.prototype.setWindow = function (level, width) {
    this.level = clamp(Math.round(level), 0, 255);
    this.window = clamp(Math.round(width), 1, 255);
    this._render();
  };

  Viewer.prototype.setInvert = function (on) {
    this.inverted = !!on;
    this._render();
    return this.inverted;
  };

  Viewer.prototype.toggleInvert = function () {
    return this.setInvert(!this.inverted);
  };

  Viewer.prototype._applyHeatmap = function () {
    this.heatmap.hidden = !(this.heatmapOn && this.heatmapAvailable);
    this.heatmap.style.opacity = String(this.opacity);
  };

  Viewer.prototype.setHeatmapVisible = function (on) {
    this.heatmapOn = !!on;
    this._applyHeatmap();
    return this.heatmapOn;
  };

  Viewer.prototype.toggleHeatmap = function () {
    return this.setHeatmapVisible(!this.heatmapOn);
  };

  Viewer.prototype.setHeatmapOpacity = function (fraction) {
    this.opacity = clamp(fraction, 0, 1);
    this._applyHeatmap();
  };

  Viewer.prototype.setDrawMode = function (on) {
    this.drawMode = !!on && this.drawEnabled;
    this.root.classList.toggle("draw-mode", this.drawMode);
    return this.drawMode;
  };

  Viewer.prototype._drawBox = function (box) {
    setRect(this.boxEl, box);
  };

  Viewer.prototype.setBox = function (box) {
    this.box = box && box.w > 0 && box.h > 0 ? box : null;
    this._drawBox(this.box);
  };

  Viewer.prototype.setPriorBoxes = function (regions) {
    var self = this;
    Object.keys(this.priorEls).forEach(function (key) {
      setRect(self.priorEls[key], regions[key] || null);
    });
  };

  function setRect(el, box) {
    if (!el) return;
    if (!box) {
      el.setAttribute("visibility", "hidden");
      return;
    }
    el.setAttribute("x", box.x);
    el.setAttribute("y", box.y);
    el.setAttribute("width", box.w);
    el.setAttribute("height", box.h);
    el.setAttribute("visibility", "visible");
  }

  window.FractureViewer = Viewer;
})();
