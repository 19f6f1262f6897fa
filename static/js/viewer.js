/*
 * Radiograph viewer: zoom and pan (CSS transform), window/level and invert (canvas lookup table),
 * Grad-CAM heat-map overlay (RGBA PNG, opacity and toggle), and the reader's fracture boxes as
 * fractions {x, y, w, h} of the image: a new one drawn by dragging (draw mode or Shift), an
 * existing one moved by dragging inside it or resized by its lower-right corner. The selected box
 * is drawn in #viewer-box, the others in the edit layer; changes are reported through onBoxes. Dragging pans, windows (window mode: left/right
 * changes the width, up/down the level, as in PACS viewers) or measures a distance (measure mode:
 * millimetres from the image's pixel spacing when known, image pixels otherwise, labelled as such).
 * Extra overlays (e.g. model candidate boxes) go through setBoxLayer(name, boxes, className) after
 * load() (each load announces itself with a "viewer:load" event on the root element) and are shown
 * or hidden with setLayerVisible(name, on).
 * Full depth (DICOM, 16-bit PNG): loadDepth(url, params) windows the image's real values instead of
 * the 8-bit canonical (see the "Full-depth windowing" section at the end).
 *
 * No inline styles or scripts (the Content-Security-Policy forbids them): this file sets style
 * properties through the CSSOM and SVG attributes only.
 */
(function () {
  "use strict";

  var MIN_BOX = 0.005; // smaller drags are clicks, not boxes
  var HANDLE_PX = 10; // the resize corner of a box, in screen pixels

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
    this.layersEl = options.layers || null;
    this.boxLayers = {}; // name -> {boxes, className}: redrawn when an image loads
    this.layerVisibility = {}; // name -> false while hidden (kept across images)
    this.measureEl = options.measureLine || null;
    this.onMeasure = options.onMeasure || function () {};
    this.mode = "pan"; // pan | window | measure (drawing a box is drawMode)
    this.spacing = null; // [row, column] mm per pixel, or null
    this.onBoxes = options.onBoxes || function () {};
    this.editEl = options.editLayer || null;
    this.boxes = []; // the reader's boxes ({x, y, w, h, ...}), fractions of the image
    this.selected = -1;
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
      var hit = self.drawEnabled && !self.drawMode && !e.shiftKey ? self._hitBox(e.clientX, e.clientY) : null;
      if (self.drawEnabled && (self.drawMode || e.shiftKey)) {
        var p = self.toFraction(e.clientX, e.clientY);
        self.drag = { kind: "box", x0: p.x, y0: p.y };
        self.root.classList.add("drawing");
      } else if (hit) {
        var start = self.toFraction(e.clientX, e.clientY);
        var b = self.boxes[hit.index];
        self.selected = hit.index;
        self.drag = { kind: hit.kind, index: hit.index, x: start.x, y: start.y, box: { x: b.x, y: b.y, w: b.w, h: b.h }, moved: false };
        self._drawBoxes();
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
        var k = self.windowStep();
        self.setWindow(self.drag.level - (e.clientY - self.drag.y) * k, self.drag.window + (e.clientX - self.drag.x) * k);
      } else if (self.drag.kind === "measure") {
        var m = self.toFraction(e.clientX, e.clientY);
        self.setMeasure({ x0: self.drag.x0, y0: self.drag.y0, x1: m.x, y1: m.y });
      } else if (self.drag.kind === "move" || self.drag.kind === "resize") {
        self._dragEdit(self.toFraction(e.clientX, e.clientY));
      } else {
        var p = self.toFraction(e.clientX, e.clientY);
        setRect(self.boxEl, self._boxFrom(self.drag.x0, self.drag.y0, p.x, p.y)); // the new box, while drawn
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
      if (drag.kind === "move" || drag.kind === "resize") {
        // a click on a box selects it; a drag moved or resized it
        self.onBoxes(self.boxes, self.selected, drag.moved ? drag.kind : "select");
      }
      if (drag.kind === "box") {
        var p = self.toFraction(e.clientX, e.clientY);
        var box = self._boxFrom(drag.x0, drag.y0, p.x, p.y);
        if (box.w < MIN_BOX || box.h < MIN_BOX) {
          self._drawBoxes(); // a click: nothing added
        } else {
          self.boxes = self.boxes.concat([box]);
          self.selected = self.boxes.length - 1;
          self._drawBoxes();
          self.onBoxes(self.boxes, self.selected, "add");
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
    this._depthReset();
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
    this._depthImageLoaded();
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
    if (this._depthPaint()) {
      this._updateStatus();
      return;
    }
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
    this.status.textContent = "Zoom " + Math.round(this.scale * 100) + "% · " + this.windowText() +
      (this.inverted ? " · inverted" : "");
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
    if (this.depthOn) {
      this._depthSetWindow(level, width);
      this._render();
      return;
    }
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

  /* The reader's boxes (fractions of the image) and which one is selected (-1: none). */
  Viewer.prototype.setBoxes = function (boxes, selected) {
    this.boxes = (boxes || []).filter(function (b) { return b && b.w > 0 && b.h > 0; });
    this.selected = selected !== undefined && selected < this.boxes.length ? selected : -1;
    this._drawBoxes();
  };

  Viewer.prototype._drawBoxes = function () {
    var self = this;
    setRect(this.boxEl, this.selected >= 0 ? this.boxes[this.selected] : null);
    if (!this.editEl) return;
    while (this.editEl.firstChild) this.editEl.removeChild(this.editEl.firstChild);
    this.boxes.forEach(function (b, index) {
      if (index === self.selected) return;
      var rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      rect.setAttribute("class", "box box-current box-unselected");
      rect.setAttribute("data-index", index);
      setRect(rect, b);
      self.editEl.appendChild(rect);
    });
  };

  /* Which box a pointer is on: {index, kind: "resize" (its lower-right corner) | "move"}, the
     selected box first, then the newest; null when none. */
  Viewer.prototype._hitBox = function (clientX, clientY) {
    var r = this.stage.getBoundingClientRect();
    if (!r.width || !r.height) return null;
    var p = { x: (clientX - r.left) / r.width, y: (clientY - r.top) / r.height };
    var hx = HANDLE_PX / r.width;
    var hy = HANDLE_PX / r.height;
    var order = [];
    if (this.selected >= 0) order.push(this.selected);
    for (var i = this.boxes.length - 1; i >= 0; i--) if (i !== this.selected) order.push(i);
    for (var k = 0; k < order.length; k++) {
      var b = this.boxes[order[k]];
      if (Math.abs(p.x - (b.x + b.w)) <= hx && Math.abs(p.y - (b.y + b.h)) <= hy) {
        return { index: order[k], kind: "resize" };
      }
      if (p.x >= b.x && p.x <= b.x + b.w && p.y >= b.y && p.y <= b.y + b.h) {
        return { index: order[k], kind: "move" };
      }
    }
    return null;
  };

  Viewer.prototype._dragEdit = function (p) {
    var d = this.drag;
    var dx = p.x - d.x;
    var dy = p.y - d.y;
    if (Math.abs(dx) > 0.002 || Math.abs(dy) > 0.002) d.moved = true;
    if (!d.moved) return;
    var next = this.drag.kind === "move"
      ? moveBox(d.box, dx, dy)
      : resizeBox(d.box, dx, dy);
    this.boxes[d.index] = Object.assign({}, this.boxes[d.index], next);
    this._drawBoxes();
  };

  function round5(v) {
    return Math.round(v * 100000) / 100000;
  }

  /* A box shifted by (dx, dy), kept inside the image. */
  function moveBox(b, dx, dy) {
    return {
      x: round5(clamp(b.x + dx, 0, 1 - b.w)),
      y: round5(clamp(b.y + dy, 0, 1 - b.h)),
      w: b.w,
      h: b.h,
    };
  }

  /* A box whose lower-right corner moved by (dw, dh): at least MIN_BOX, inside the image. */
  function resizeBox(b, dw, dh) {
    return {
      x: b.x,
      y: b.y,
      w: round5(clamp(b.w + dw, MIN_BOX, 1 - b.x)),
      h: round5(clamp(b.h + dh, MIN_BOX, 1 - b.y)),
    };
  }

  Viewer.moveBox = moveBox;
  Viewer.resizeBox = resizeBox;

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

  /* ---- Full-depth windowing (DICOM and 16-bit PNG) ----------------------------------------------
   * The server keeps an image's real values as a 16-bit grayscale PNG beside the 8-bit canonical.
   * Canvas drawImage would reduce it to 8 bits, so it is decoded here: the IDAT data inflated with
   * DecompressionStream("deflate") (zlib), the rows unfiltered. A sample s means the value
   * s * slope + intercept in the file's units (Modality LUT applied); windows use the DICOM linear
   * VOI function on those values, so the file's own window shows the image as the 8-bit canonical
   * does, and MONOCHROME1 (params.invert) shows low values bright. Without that data (JPEG, 8-bit
   * PNG, colour DICOM, an older browser, a failed fetch) the viewer windows the 8-bit canonical. */

  // Presets on the full-depth values: the black and white ends of the window as fractions of the
  // file's window (else of the full range), in display order (dark to bright). They are the
  // 8-bit presets (bone 150/140, soft tissue 90/200 on the 0-255 canonical, which is that window)
  // applied to the real values, so they look the same at the start but keep every grey level.
  var DEPTH_PRESETS = {
    bone: [80 / 255, 220 / 255],
    soft: [-10 / 255, 190 / 255],
  };
  var PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

  function inflate(parts) {
    var stream = new Blob(parts).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buffer) { return new Uint8Array(buffer); });
  }

  function paeth(a, b, c) {
    var p = a + b - c;
    var pa = Math.abs(p - a);
    var pb = Math.abs(p - b);
    var pc = Math.abs(p - c);
    if (pa <= pb && pa <= pc) return a;
    return pb <= pc ? b : c;
  }

  /* A 16-bit grayscale, non-interlaced PNG (what the server writes) -> {width, height, samples}. */
  function decodePng16(buffer) {
    var bytes = new Uint8Array(buffer);
    var view = new DataView(buffer);
    for (var k = 0; k < 8; k++) {
      if (bytes[k] !== PNG_SIGNATURE[k]) return Promise.reject(new Error("not a PNG file"));
    }
    var width = 0;
    var height = 0;
    var idat = [];
    var pos = 8;
    while (pos + 8 <= bytes.length) {
      var length = view.getUint32(pos);
      var type = String.fromCharCode(bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]);
      var start = pos + 8;
      if (start + length + 4 > bytes.length) return Promise.reject(new Error("truncated PNG"));
      if (type === "IHDR") {
        width = view.getUint32(start);
        height = view.getUint32(start + 4);
        // bit depth 16, colour type 0 (grayscale), no interlace
        if (bytes[start + 8] !== 16 || bytes[start + 9] !== 0 || bytes[start + 12] !== 0) {
          return Promise.reject(new Error("not a 16-bit grayscale PNG"));
        }
      } else if (type === "IDAT") {
        idat.push(bytes.subarray(start, start + length));
      } else if (type === "IEND") {
        break;
      }
      pos = start + length + 4; // data and CRC
    }
    if (!width || !height || !idat.length) return Promise.reject(new Error("PNG without image data"));
    return inflate(idat).then(function (raw) {
      var stride = width * 2;
      if (raw.length < height * (stride + 1)) throw new Error("truncated PNG image data");
      var samples = new Uint16Array(width * height);
      var prev = -1; // offset of the previous row's (unfiltered) bytes
      for (var y = 0; y < height; y++) {
        var row = y * (stride + 1) + 1;
        var filter = raw[row - 1];
        var i;
        // Unfilter in place (bpp = 2): a is the byte 2 to the left, b the byte above, c above-left.
        if (filter === 1) {
          for (i = 2; i < stride; i++) raw[row + i] = (raw[row + i] + raw[row + i - 2]) & 255;
        } else if (filter === 2) {
          if (prev >= 0) for (i = 0; i < stride; i++) raw[row + i] = (raw[row + i] + raw[prev + i]) & 255;
        } else if (filter === 3) {
          for (i = 0; i < stride; i++) {
            var left = i >= 2 ? raw[row + i - 2] : 0;
            var up = prev >= 0 ? raw[prev + i] : 0;
            raw[row + i] = (raw[row + i] + ((left + up) >> 1)) & 255;
          }
        } else if (filter === 4) {
          for (i = 0; i < stride; i++) {
            var a = i >= 2 ? raw[row + i - 2] : 0;
            var b = prev >= 0 ? raw[prev + i] : 0;
            var c = i >= 2 && prev >= 0 ? raw[prev + i - 2] : 0;
            raw[row + i] = (raw[row + i] + paeth(a, b, c)) & 255;
          }
        } else if (filter !== 0) {
          throw new Error("unknown PNG filter");
        }
        var out = y * width;
        for (i = 0; i < width; i++) samples[out + i] = (raw[row + 2 * i] << 8) | raw[row + 2 * i + 1];
        prev = row;
      }
      return { width: width, height: height, samples: samples };
    });
  }

  function finiteNumber(v) {
    return typeof v === "number" && isFinite(v);
  }

  /* Decoded samples and their params -> what windowing needs: value map, histogram, range. */
  function depthModel(image, params) {
    var slope = params.slope;
    var intercept = params.intercept;
    if (!finiteNumber(slope) || slope === 0 || !finiteNumber(intercept)) throw new Error("bad value map");
    var s = image.samples;
    var lowS = 65535;
    var highS = 0;
    for (var i = 0; i < s.length; i++) {
      var sample = s[i];
      if (sample < lowS) lowS = sample;
      if (sample > highS) highS = sample;
    }
    var v0 = lowS * slope + intercept;
    var v1 = highS * slope + intercept;
    // Values step by |slope|: integers stay integers, finer maps keep their decimals.
    var step = Math.abs(slope);
    var integral = Math.abs(slope - Math.round(slope)) < 1e-9 && Math.abs(intercept - Math.round(intercept)) < 1e-9;
    var decimals = integral ? 0 : Math.min(4, Math.max(0, -Math.floor(Math.log10(step)) + 1));
    var win = params.window;
    return {
      width: image.width,
      height: image.height,
      samples: s,
      highS: highS,
      slope: slope,
      intercept: intercept,
      min: Math.min(v0, v1),
      max: Math.max(v0, v1),
      step: integral ? 1 : Math.pow(10, -decimals),
      decimals: decimals,
      invert: !!params.invert,
      exact: params.exact !== false,
      fileWindow: win && finiteNumber(win[0]) && finiteNumber(win[1]) && win[1] > 0 ? [win[0], win[1]] : null,
    };
  }

  /* The DICOM window whose black end is lo and white end hi. */
  function windowBetween(lo, hi) {
    var width = Math.max(hi - lo + 1, 1);
    return [lo + width / 2, width];
  }

  Viewer.prototype._depthReset = function () {
    if (this.depthOn) {
      this.level = 128;
      this.window = 255;
    }
    this.depth = null;
    this.depthOn = false;
    delete this.root.dataset.depth;
  };

  /* Window the full-depth values of the image being shown: `url` of its 16-bit PNG, `params`
     {slope, intercept, min, max, window, invert, exact}. Call after load(); resolves true once
     windowing runs on the full-depth values, false when the viewer keeps the 8-bit canonical. */
  Viewer.prototype.loadDepth = function (url, params) {
    var self = this;
    var token = this.loadToken;
    if (!url || !params) return Promise.resolve(false);
    if (typeof DecompressionStream === "undefined") {
      this.root.dataset.depth = "unavailable";
      return Promise.resolve(false);
    }
    this.root.dataset.depth = "loading";
    return fetch(url, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.arrayBuffer();
      })
      .then(decodePng16)
      .then(function (image) {
        if (token !== self.loadToken) return false;
        self.depth = depthModel(image, params);
        self._depthActivate();
        return true;
      })
      .catch(function () {
        if (token !== self.loadToken) return false;
        self.depth = null;
        self.root.dataset.depth = "unavailable";
        self._updateStatus();
        return false;
      });
  };

  Viewer.prototype._depthImageLoaded = function () {
    if (this.depth && !this.depthOn) this._depthActivate();
  };

  /* Switch to the full-depth values once both they and the 8-bit image are here. */
  Viewer.prototype._depthActivate = function () {
    var d = this.depth;
    if (!d || !this.naturalW || !this.imageData || this.imageData.width !== this.naturalW) return;
    if (d.width !== this.naturalW || d.height !== this.naturalH) {
      this.depth = null;
      this.root.dataset.depth = "unavailable";
      return;
    }
    this.depthOn = true;
    this.canvas.style.filter = "";
    var win = this._depthPresetWindow("default");
    this._depthSetWindow(win[0], win[1]);
    this.root.dataset.depth = "1";
    this._render();
  };

  Viewer.prototype._depthPresetWindow = function (name) {
    var d = this.depth;
    if (name === "default" && d.fileWindow) return d.fileWindow.slice();
    if (name === "default" || name === "full") return windowBetween(d.min, d.max);
    var q = DEPTH_PRESETS[name];
    if (!q) return null;
    var base = d.fileWindow || windowBetween(d.min, d.max);
    var black = base[0] - base[1] / 2; // the base window's black end and width, in values
    // Display order is value order, or its reverse for MONOCHROME1.
    var qa = d.invert ? 1 - q[1] : q[0];
    var qb = d.invert ? 1 - q[0] : q[1];
    return windowBetween(black + qa * base[1], black + qb * base[1]);
  };

  Viewer.prototype._depthSetWindow = function (level, width) {
    var d = this.depth;
    var round = function (v) { return Number((Math.round(v / d.step) * d.step).toFixed(d.decimals)); };
    this.level = round(clamp(level, d.min, d.max));
    this.window = round(clamp(width, d.step, 2 * (d.max - d.min + 1)));
  };

  /* Paint the full-depth values through the window; false when the 8-bit path paints. */
  Viewer.prototype._depthPaint = function () {
    if (!this.depthOn) return false;
    var d = this.depth;
    var lut = new Uint32Array(d.highS + 1);
    var black = this.level - 0.5;
    var span = Math.max(this.window - 1, 1);
    var flip = d.invert !== this.inverted;
    for (var s = 0; s <= d.highS; s++) {
      var x = s * d.slope + d.intercept;
      var o = clamp(Math.round(((x - black) / span + 0.5) * 255), 0, 255);
      if (flip) o = 255 - o;
      lut[s] = (0xff000000 | (o << 16) | (o << 8) | o) >>> 0;
    }
    var out = new Uint32Array(this.imageData.data.buffer);
    var samples = d.samples;
    for (var i = 0; i < samples.length; i++) out[i] = lut[samples[i]];
    this.ctx.putImageData(this.imageData, 0, 0);
    return true;
  };

  /* Set a named window: "default" (the file's window, else the full range), "full", "bone" or
     "soft", computed on the full-depth values. False on the 8-bit canonical (the caller's own
     0-255 presets apply there). */
  Viewer.prototype.applyPreset = function (name) {
    if (!this.depthOn) return false;
    var win = this._depthPresetWindow(name);
    if (!win) return false;
    this.setWindow(win[0], win[1]);
    return true;
  };

  Viewer.prototype.isFullDepth = function () {
    return !!this.depthOn;
  };

  /* What the level and window controls may range over, in the units shown. */
  Viewer.prototype.windowLimits = function () {
    if (!this.depthOn) return { levelMin: 0, levelMax: 255, widthMin: 1, widthMax: 255, step: 1 };
    var d = this.depth;
    return {
      levelMin: d.min,
      levelMax: d.max,
      widthMin: d.step,
      widthMax: 2 * (d.max - d.min + 1),
      step: d.step,
    };
  };

  /* Window change per screen pixel dragged: a drag across 256 pixels covers the whole range. */
  Viewer.prototype.windowStep = function () {
    if (!this.depthOn) return 1;
    return (this.depth.max - this.depth.min + 1) / 256;
  };

  Viewer.prototype.windowText = function () {
    if (!this.depthOn) return "level " + this.level + " · window " + this.window;
    var d = this.depth;
    return "level " + this.level.toFixed(d.decimals) + " · window " + this.window.toFixed(d.decimals) +
      " (file values" + (d.exact ? "" : ", quantised to 16 bits") + ")";
  };

  Viewer.decodePng16 = decodePng16; // for the browser tests

  window.FractureViewer = Viewer;
})();
