/*
 * Review screen: wires the viewer to the toolbar, the per-image decision panels and the keyboard.
 * Shortcuts: C confirm, X correct (1 / 2 choose a read when adjudicating), N save and next,
 * H heat-map, I invert, B draw box, A add box, Del delete the selected box, arrows move it
 * (Shift+arrows resize it), + / - zoom, 0 fit, [ / ] previous / next image.
 *
 * Boxes: the reader's fracture boxes per image, several allowed, kept as JSON in the panel's
 * boxes input ({x, y, w, h, origin} in fractions of the image). The model's marks are offered as
 * suggestions: "Accept" makes one the reader's box (origin model_accepted; moving or resizing it
 * makes it model_moved); boxes the reader draws or adds are "reader".
 *
 * The reader's work in progress (decision, box, comment per image) is saved to the server as a
 * draft while they hold the claim and restored when they come back; leaving with changes the
 * server has not kept yet asks first. A box marks a fracture: a "No fracture" read has none.
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
  var adjudication = !!(form && form.dataset.adjudication);
  var current = 0;
  var submitting = false;
  var onChanged = function () {};

  var selected = {}; // panel index -> the selected box's index
  var STEP = 0.01; // keyboard move / resize step, a fraction of the image

  function pct(v) {
    return (v * 100).toFixed(1) + "%";
  }

  function regionInput(panel) {
    return panel.querySelector(".region-input");
  }

  function parseBoxes(text) {
    if (!text) return [];
    try {
      var list = JSON.parse(text);
      return Array.isArray(list) ? list.filter(function (b) { return b && typeof b.x === "number"; }) : [];
    } catch (err) {
      return [];
    }
  }

  function boxesOf(panel) {
    var input = regionInput(panel);
    return input ? parseBoxes(input.value) : parseBoxes(panel.dataset.finalBoxes || "");
  }

  var ORIGIN_WORDS = {
    reader: "drawn by you",
    model_accepted: "model mark, accepted",
    model_moved: "model mark, moved",
  };

  function describe(box) {
    return "x " + pct(box.x) + ", y " + pct(box.y) + ", " + pct(box.w) + " × " + pct(box.h);
  }

  function sameBox(a, b) {
    return Math.abs(a.x - b.x) < 1e-4 && Math.abs(a.y - b.y) < 1e-4 &&
      Math.abs(a.w - b.w) < 1e-4 && Math.abs(a.h - b.h) < 1e-4;
  }

  /* The panel's readout, its list of boxes (select / delete buttons) and its suggestions. */
  function showBoxes(panel, boxes) {
    var readout = panel.querySelector(".region-readout");
    if (readout) {
      readout.textContent = !boxes.length
        ? "No box drawn."
        : boxes.length === 1
          ? "Box: " + describe(boxes[0])
          : "Boxes (" + boxes.length + "): " + boxes.map(describe).join("; ");
    }
    var index = panels.indexOf(panel);
    var list = panel.querySelector(".reader-boxes");
    if (list) {
      while (list.firstChild) list.removeChild(list.firstChild);
      boxes.forEach(function (box, i) {
        var item = document.createElement("li");
        item.className = "reader-box" + (selected[index] === i ? " selected" : "");
        item.setAttribute("data-testid", "reader-box");
        item.dataset.origin = box.origin || "reader";
        var pick = document.createElement("button");
        pick.type = "button";
        pick.className = "link-button select-box";
        pick.setAttribute("aria-pressed", selected[index] === i ? "true" : "false");
        pick.textContent = "Box " + (i + 1) + " (" + (ORIGIN_WORDS[box.origin] || ORIGIN_WORDS.reader) + ")";
        pick.addEventListener("click", function () { selectBox(panel, i); });
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "link-button delete-box";
        remove.textContent = "Delete box " + (i + 1);
        remove.addEventListener("click", function () { deleteBox(panel, i); });
        item.appendChild(pick);
        item.appendChild(document.createTextNode(" "));
        item.appendChild(remove);
        list.appendChild(item);
      });
      list.hidden = !boxes.length;
    }
    panel.querySelectorAll(".accept-mark").forEach(function (button) {
      var mark = parseBoxes("[" + button.dataset.box + "]")[0];
      var taken = mark && boxes.some(function (b) { return b.origin === "model_accepted" && sameBox(b, mark); });
      button.dataset.accepted = taken ? "1" : "";
      button.querySelector(".accept-state").textContent = taken ? "accepted" : "";
    });
  }

  /* Store a panel's boxes (and which is selected), redraw them, tell the draft. */
  function setBoxes(panel, boxes, sel, quiet) {
    var index = panels.indexOf(panel);
    var clean = boxes.map(function (b) {
      return { x: b.x, y: b.y, w: b.w, h: b.h, origin: b.origin || "reader" };
    });
    selected[index] = sel !== undefined && sel >= 0 && sel < clean.length ? sel : -1;
    var input = regionInput(panel);
    if (input) input.value = clean.length ? JSON.stringify(clean) : "";
    if (index === current) viewer.setBoxes(clean, selected[index]);
    showBoxes(panel, clean);
    if (!quiet) {
      updateTabs();
      onChanged();
    }
  }

  function selectBox(panel, i) {
    setBoxes(panel, boxesOf(panel), i, true);
  }

  function deleteBox(panel, i) {
    if (!editable) return;
    var boxes = boxesOf(panel);
    if (i < 0 || i >= boxes.length) return;
    boxes.splice(i, 1);
    setBoxes(panel, boxes, boxes.length ? Math.min(i, boxes.length - 1) : -1);
    announce(panel, "Box " + (i + 1) + " deleted.");
  }

  function announce(panel, text) {
    var status = panel.querySelector(".box-status");
    if (status) status.textContent = text;
  }

  function boxesAllowed(panel) {
    return editable && panelLabel(panel) !== "not_fractured";
  }

  function acceptMark(panel, button) {
    if (!boxesAllowed(panel)) return;
    var mark = parseBoxes("[" + button.dataset.box + "]")[0];
    if (!mark) return;
    var boxes = boxesOf(panel);
    var already = boxes.findIndex(function (b) { return b.origin === "model_accepted" && sameBox(b, mark); });
    if (already >= 0) {
      selectBox(panel, already);
      return;
    }
    boxes.push({ x: mark.x, y: mark.y, w: mark.w, h: mark.h, origin: "model_accepted" });
    setBoxes(panel, boxes, boxes.length - 1);
    announce(panel, "Model mark " + button.dataset.rank + " accepted as box " + boxes.length + ".");
  }

  /* A box added from the keyboard: 10% of the image, centred; move it with the arrows. */
  function addBox(panel) {
    if (!boxesAllowed(panel)) return;
    var boxes = boxesOf(panel);
    boxes.push({ x: 0.45, y: 0.45, w: 0.1, h: 0.1, origin: "reader" });
    setBoxes(panel, boxes, boxes.length - 1);
    announce(panel, "Box " + boxes.length + " added in the centre: move it with the arrow keys, resize with Shift+arrows.");
  }

  /* Move (or with resize, grow/shrink) the selected box by a keyboard step. */
  function nudge(dx, dy, resize) {
    var panel = panels[current];
    var i = selected[current];
    if (!boxesAllowed(panel) || i === undefined || i < 0) return false;
    var boxes = boxesOf(panel);
    var box = boxes[i];
    if (!box) return false;
    var next = resize ? window.FractureViewer.resizeBox(box, dx, dy) : window.FractureViewer.moveBox(box, dx, dy);
    boxes[i] = Object.assign({}, box, next, { origin: box.origin === "model_accepted" ? "model_moved" : box.origin });
    setBoxes(panel, boxes, i);
    return true;
  }

  var viewer = new window.FractureViewer(root, {
    stage: document.getElementById("viewer-stage"),
    canvas: document.getElementById("viewer-canvas"),
    heatmap: document.getElementById("viewer-heatmap"),
    status: document.getElementById("viewer-status"),
    box: document.getElementById("viewer-box"),
    editLayer: document.getElementById("viewer-edit-boxes"),
    drawEnabled: editable,
    layers: document.getElementById("viewer-layers"),
    measureLine: document.getElementById("measure-line"),
    onMeasure: function (result) {
      var out = document.getElementById("measure-readout");
      if (out) out.textContent = result ? "Distance: " + result.text : "";
    },
    onChange: function (v) {
      syncWindowControls(v);
      if (Number(level.value) !== v.level) level.value = v.level;
      if (Number(windowWidth.value) !== v.window) windowWidth.value = v.window;
    },
    onBoxes: function (boxes, sel, how) {
      var panel = panels[current];
      if (!regionInput(panel)) return;
      if (how === "select") {
        selectBox(panel, sel);
        return;
      }
      var before = boxesOf(panel);
      var list = boxes.map(function (b, i) {
        var origin = b.origin || "reader";
        // a model mark the reader moved or resized is theirs to answer for, not the model's
        if (i === sel && how !== "add" && before[i] && origin === "model_accepted") origin = "model_moved";
        return Object.assign({}, b, { origin: origin });
      });
      setBoxes(panel, list, sel);
    },
  });

  window.reviewViewer = viewer; // for overlays added by other scripts (and the browser tests)

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
    viewer.loadDepth(panel.dataset.depthUrl || "", depthParams(panel));
    viewer.setSpacing(panel.dataset.spacing ? panel.dataset.spacing.split(",").map(Number) : null);
    heatToggle.disabled = !panel.dataset.heatmapUrl;
    var boxes = boxesOf(panel);
    viewer.setBoxes(boxes, selected[current] === undefined ? -1 : selected[current]);
    // Earlier reads' boxes (second reads see none: blind), read-only, in their colours.
    var w = Number(panel.dataset.width) || 1;
    var h = Number(panel.dataset.height) || 1;
    var priors = { 1: [], 2: [] };
    panel.querySelectorAll("[data-read][data-boxes]").forEach(function (row) {
      if (!priors[row.dataset.read]) return;
      priors[row.dataset.read] = parseBoxes(row.dataset.boxes).map(function (b) {
        return { x0: b.x * w, y0: b.y * h, x1: (b.x + b.w) * w, y1: (b.y + b.h) * h };
      });
    });
    viewer.setBoxLayer("read-1", priors[1], "box-read1");
    viewer.setBoxLayer("read-2", priors[2], "box-read2");
    syncBoxAllowed();
  }

  /* Full depth (DICOM, 16-bit PNG): the panel's params for the viewer, or null. */
  function depthParams(panel) {
    if (!panel.dataset.depth) return null;
    try {
      return JSON.parse(panel.dataset.depth);
    } catch (err) {
      return null;
    }
  }

  /* The level/window sliders range over the values being windowed (0-255 on the 8-bit canonical,
     the file's own values at full depth), and the readout shows them. */
  function syncWindowControls(v) {
    var limits = v.windowLimits();
    [[level, limits.levelMin, limits.levelMax], [windowWidth, limits.widthMin, limits.widthMax]].forEach(function (entry) {
      var input = entry[0];
      if (Number(input.min) !== entry[1]) input.min = entry[1];
      if (Number(input.max) !== entry[2]) input.max = entry[2];
      if (Number(input.step) !== limits.step) input.step = limits.step;
    });
    var readout = document.getElementById("wl-readout");
    if (readout) {
      readout.textContent = v.isFullDepth()
        ? "Full depth · " + v.windowText()
        : "8-bit display · " + v.windowText();
    }
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

  function choose(number) {
    var panel = panels[current];
    var radio = panel && panel.querySelector('input[data-choice="' + number + '"]');
    if (radio) {
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  /* The label this panel's answer gives: "fractured", "not_fractured" or "" (not decided). */
  function panelLabel(panel) {
    var checked = panel.querySelector('input[type="radio"]:checked');
    var select = panel.querySelector("select");
    if (select) return select.value;
    if (!checked) return "";
    if (checked.dataset.choice) {
      var choice = checked.closest("[data-label]");
      return choice ? choice.dataset.label : "";
    }
    var model = panel.dataset.modelLabel;
    if (!model) return "";
    if (checked.dataset.decision === "confirm") return model;
    return model === "fractured" ? "not_fractured" : "fractured";
  }

  /* No box on a "No fracture" answer: drop the panel's boxes and switch the box tools off. */
  function syncBoxAllowed() {
    if (!editable) return;
    var panel = panels[current];
    var noFracture = panelLabel(panel) === "not_fractured";
    if (drawToggle) {
      drawToggle.disabled = noFracture;
      drawToggle.title = noFracture
        ? "A box marks a fracture: this image is read as 'No fracture'"
        : "Draw a fracture box (B), then drag on the image";
    }
    panels.forEach(function (p) {
      var off = panelLabel(p) === "not_fractured";
      p.querySelectorAll(".accept-mark, .add-box").forEach(function (b) { b.disabled = off; });
    });
    viewer.drawEnabled = !noFracture;
    if (noFracture) {
      if (viewer.drawMode) toggleDraw(false);
      if (boxesOf(panel).length) {
        setBoxes(panel, [], -1);
        var readout = panel.querySelector(".region-readout");
        if (readout) readout.textContent = "Boxes removed: a 'No fracture' read has no box.";
      }
    }
  }

  /* Adjudication: choosing a read puts its boxes in the adjudicator's list, to keep, edit or
     delete; boxes the adjudicator changed stay when they switch reads. */
  function prefillFromChoice(panel) {
    if (!adjudication || !regionInput(panel)) return;
    var checked = panel.querySelector("input[data-choice]:checked");
    var choice = checked && checked.closest("[data-read]");
    if (!choice) return;
    var mine = boxesOf(panel);
    if (mine.length && JSON.stringify(mine) !== (panel.dataset.prefilled || "")) return;
    var from = parseBoxes(choice.dataset.boxes || "");
    setBoxes(panel, from, from.length ? 0 : -1);
    panel.dataset.prefilled = JSON.stringify(boxesOf(panel));
  }

  function panelDone(panel) {
    return !!panelLabel(panel);
  }

  function updateTabs() {
    thumbs.forEach(function (thumb, i) {
      var state = thumb.querySelector(".thumb-state");
      if (!state) return;
      var done = panelDone(panels[i]);
      state.textContent = done ? "done" : "to do";
      thumb.classList.toggle("thumb-done", done);
    });
  }

  function toggleDraw(force) {
    var on = viewer.setDrawMode(force === undefined ? !viewer.drawMode : force);
    setPressed(drawToggle, on);
  }

  /* Del: delete the selected box (the newest when none is selected). */
  function clearBox() {
    if (!editable) return;
    var panel = panels[current];
    var boxes = boxesOf(panel);
    if (!boxes.length) return;
    var i = selected[current];
    deleteBox(panel, i !== undefined && i >= 0 ? i : boxes.length - 1);
  }

  function missingDecision() {
    for (var i = 0; i < panels.length; i++) {
      if (!panelDone(panels[i])) return i;
    }
    return -1;
  }

  function missingMessage(missing) {
    var how = adjudication ? "choose read 1 or read 2 (1 / 2)" : "confirm (C) or correct (X)";
    return panels.length > 1
      ? "Image " + (missing + 1) + " has no decision yet: " + how + "."
      : "Choose a decision first: " + how + ".";
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
        case "actual": viewer.actualSize(); break;
        case "window-drag": setMode("window"); break;
        case "measure": setMode("measure"); break;
      }
    });
  });
  function setMode(mode) {
    var now = viewer.setMode(mode);
    setPressed(document.getElementById("window-toggle"), now === "window");
    setPressed(document.getElementById("measure-toggle"), now === "measure");
    if (now !== "pan" && viewer.drawMode) toggleDraw(false);
  }
  var preset = document.getElementById("wl-preset");
  if (preset) {
    preset.addEventListener("change", function () {
      if (!preset.value) return;
      if (viewer.applyPreset(preset.options[preset.selectedIndex].dataset.preset)) return;
      var parts = preset.value.split(",").map(Number);
      level.value = parts[0];
      windowWidth.value = parts[1];
      onWindow();
    });
  }
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
    form.addEventListener("change", function (e) {
      var changed = e.target && e.target.closest ? e.target.closest(".image-panel") : null;
      if (changed && e.target.dataset && e.target.dataset.choice) prefillFromChoice(changed);
      updateTabs();
      syncBoxAllowed();
      if (!errorBox.hidden) {
        var missing = missingDecision();
        if (missing < 0) errorBox.hidden = true;
        else errorBox.textContent = missingMessage(missing);
      }
    });
    form.addEventListener("submit", function (e) {
      var missing = missingDecision();
      if (missing >= 0) {
        e.preventDefault();
        selectImage(missing);
        errorBox.textContent = missingMessage(missing);
        errorBox.hidden = false;
        return;
      }
      submitting = true;
    });
  }

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
        (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "range"))) return;
    var key = e.key;
    var handled = true;
    // arrow keys keep their own meaning on radio buttons and sliders
    var arrowsOff = !!(t && t.tagName === "INPUT");
    switch (key) {
      case "c": case "C": if (editable && !adjudication) decide("confirm"); else handled = false; break;
      case "x": case "X": if (editable && !adjudication) decide("correct"); else handled = false; break;
      case "1": if (editable && adjudication) choose(1); else handled = false; break;
      case "2": if (editable && adjudication) choose(2); else handled = false; break;
      case "n": case "N":
        if (editable && form) {
          if (form.requestSubmit) form.requestSubmit(saveNext); else saveNext.click();
        } else handled = false;
        break;
      case "h": case "H": setPressed(heatToggle, viewer.toggleHeatmap()); break;
      case "i": case "I": setPressed(invertBtn, viewer.toggleInvert()); break;
      case "b": case "B": if (editable) { if (viewer.mode !== "pan") setMode(viewer.mode); toggleDraw(); } else handled = false; break;
      case "w": case "W": setMode("window"); break;
      case "m": case "M": setMode("measure"); break;
      case "Delete": case "Backspace": if (editable) clearBox(); else handled = false; break;
      case "a": case "A": if (editable) addBox(panels[current]); else handled = false; break;
      case "ArrowLeft": handled = !arrowsOff && nudge(-STEP, 0, e.shiftKey); break;
      case "ArrowRight": handled = !arrowsOff && nudge(STEP, 0, e.shiftKey); break;
      case "ArrowUp": handled = !arrowsOff && nudge(0, -STEP, e.shiftKey); break;
      case "ArrowDown": handled = !arrowsOff && nudge(0, STEP, e.shiftKey); break;
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

  /* Work in progress kept on the server (one draft per claim), restored on return. */
  var draftUrl = form && form.dataset.draftUrl;
  if (draftUrl && editable) {
    var draftStatus = document.getElementById("draft-status");
    var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    var dirty = false; // changes the server has not kept yet
    var saveTimer = null;
    var inFlight = false;

    var collect = function () {
      var data = {};
      panels.forEach(function (panel) {
        var checked = panel.querySelector('input[type="radio"]:checked');
        var select = panel.querySelector("select");
        var comment = panel.querySelector("textarea");
        var region = regionInput(panel);
        data[panel.dataset.imageId] = {
          decision: checked && checked.dataset.decision ? checked.value : "",
          choice: checked && checked.dataset.choice ? checked.value : "",
          final_label: select ? select.value : "",
          boxes: region ? parseBoxes(region.value) : [],
          comment: comment ? comment.value : "",
        };
      });
      return data;
    };

    var restore = function (data) {
      var restored = false;
      panels.forEach(function (panel) {
        var entry = data[panel.dataset.imageId];
        if (!entry) return;
        var value = entry.choice || entry.decision;
        if (value) {
          var radio = panel.querySelector('input[type="radio"][value="' + value + '"]');
          if (radio) { radio.checked = true; restored = true; }
        }
        var select = panel.querySelector("select");
        if (select && entry.final_label) { select.value = entry.final_label; restored = true; }
        var input = regionInput(panel);
        if (regionInput(panel) && entry.boxes && entry.boxes.length) {
          setBoxes(panel, entry.boxes, entry.boxes.length - 1, true);
          restored = true;
        }
        var comment = panel.querySelector("textarea");
        if (comment && entry.comment) { comment.value = entry.comment; restored = true; }
      });
      return restored;
    };

    var setState = function (state, text) {
      form.dataset.draftState = state;
      if (text !== undefined) draftStatus.textContent = text;
    };

    var saveDraft = function () {
      saveTimer = null;
      if (submitting) return; // the read itself is being saved: the draft goes with the claim
      if (inFlight) { saveTimer = window.setTimeout(saveDraft, 300); return; }
      inFlight = true;
      dirty = false;
      setState("saving");
      fetch(draftUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(collect()),
      }).then(function (response) {
        inFlight = false;
        if (response.ok) {
          if (!dirty) setState("saved", "Work in progress kept: it is restored if you leave and come back.");
          return;
        }
        dirty = true;
        return response.json().then(function (body) {
          setState("error", (body && body.message) || "Your work in progress could not be kept.");
        });
      }).catch(function () {
        inFlight = false;
        dirty = true;
        setState("error", "Offline: your work in progress is not kept yet; it is retried on your next change.");
      });
    };

    onChanged = function () {
      if (submitting) return;
      dirty = true;
      setState("pending");
      if (saveTimer) window.clearTimeout(saveTimer);
      saveTimer = window.setTimeout(saveDraft, 500);
    };
    form.addEventListener("change", onChanged);
    form.addEventListener("input", onChanged);

    window.addEventListener("beforeunload", function (e) {
      if ((dirty || inFlight) && !submitting) {
        e.preventDefault();
        e.returnValue = "";
      }
    });

    var draftEl = document.getElementById("review-draft");
    var saved = {};
    try { saved = draftEl ? JSON.parse(draftEl.textContent) || {} : {}; } catch (err) { saved = {}; }
    if (restore(saved)) {
      setState("saved", "Your work in progress on this case was restored.");
    } else {
      setState("empty");
    }
    updateTabs();
  } else {
    updateTabs();
  }

  panels.forEach(function (panel, index) {
    panel.querySelectorAll(".accept-mark").forEach(function (button) {
      button.addEventListener("click", function () {
        if (index !== current) selectImage(index);
        acceptMark(panel, button);
      });
    });
    var add = panel.querySelector(".add-box");
    if (add) {
      add.addEventListener("click", function () {
        if (index !== current) selectImage(index);
        addBox(panel);
      });
    }
    showBoxes(panel, boxesOf(panel));
  });

  selectImage(0);
})();
