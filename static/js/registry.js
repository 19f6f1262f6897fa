// Model registry pages: live progress of a training run (confirmations: static/js/confirm.js).
(function () {
  "use strict";

  var live = document.getElementById("run-live");
  if (!live || live.getAttribute("data-in-flight") === "0") { return; }
  var url = live.getAttribute("data-status-url");
  var bar = document.getElementById("run-progress");
  var text = document.getElementById("run-progress-text");
  var statusEl = document.getElementById("run-status");
  var logEl = document.getElementById("run-log");
  var heartbeatEl = document.getElementById("run-heartbeat");
  var delay = 2000;

  function describe(progress) {
    var parts = [];
    if (progress.epoch !== undefined) {
      parts.push("epoch " + progress.epoch + (progress.epochs ? " of " + progress.epochs : ""));
    }
    if (progress.phase) { parts.push(progress.phase); }
    if (progress.step !== undefined && progress.steps) {
      parts.push("batch " + progress.step + " of " + progress.steps);
    }
    ["loss", "val_auroc"].forEach(function (key) {
      if (typeof progress[key] === "number") { parts.push(key.replace("_", " ") + " " + progress[key].toFixed(4)); }
    });
    return parts.join(", ");
  }

  function render(run) {
    var progress = run.progress || {};
    if (bar && typeof progress.fraction === "number") {
      bar.max = 1;
      bar.value = Math.min(progress.fraction, 1);
    } else if (bar && progress.epochs) {
      bar.max = progress.epochs;
      bar.value = Math.min(progress.epoch || 0, progress.epochs);
    } else if (bar && !run.in_flight) {
      bar.max = 1;
      bar.value = 1;
    }
    if (text) { text.textContent = run.status_display + (describe(progress) ? ": " + describe(progress) : ""); }
    if (statusEl) {
      statusEl.textContent = run.status_display;
      statusEl.className = "status run-" + run.status;
    }
    if (logEl && run.log_tail !== undefined) { logEl.textContent = run.log_tail; }
    if (heartbeatEl && run.heartbeat_at) { heartbeatEl.textContent = new Date(run.heartbeat_at).toLocaleString(); }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (run) {
        render(run);
        if (run.in_flight) {
          delay = 2000;
          window.setTimeout(poll, delay);
        } else {
          window.setTimeout(function () { window.location.reload(); }, 1000);
        }
      })
      .catch(function () {
        delay = Math.min(delay * 2, 30000);
        window.setTimeout(poll, delay);
      });
  }
  poll();
}());
