// Intake page: drag-and-drop of several radiographs, thumbnails, removal, XHR upload with a
// progress bar and per-file errors from the server. Without JavaScript the form posts normally.
(function () {
  "use strict";

  var form = document.getElementById("intake-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) { return; }

  var input = form.querySelector("input[type=file][name=images]");
  var dropzone = document.getElementById("dropzone");
  var list = document.getElementById("file-list");
  var errorsBox = document.getElementById("intake-errors");
  var progressRow = document.getElementById("progress-row");
  var progress = document.getElementById("upload-progress");
  var progressLabel = document.getElementById("progress-label");
  var submit = document.getElementById("submit-button");
  var maxFiles = parseInt(form.dataset.maxFiles, 10) || 100;
  var maxBytes = parseInt(form.dataset.maxFileBytes, 10) || 0;
  var entries = [];  // {file, url, item}
  var busy = false;

  dropzone.classList.add("enhanced");

  // Restored from the back/forward cache after a submission: fetch a fresh form (a new key),
  // or the next upload would be answered with the previous case.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { window.location.reload(); }
  });

  function formatSize(bytes) {
    if (bytes >= 1048576) { return (bytes / 1048576).toFixed(1) + " MB"; }
    return Math.max(1, Math.round(bytes / 1024)) + " KB";
  }

  function showErrors(messages) {
    var ul = errorsBox.querySelector("ul");
    ul.textContent = "";
    messages.forEach(function (message) {
      var li = document.createElement("li");
      li.textContent = message;
      ul.appendChild(li);
    });
    errorsBox.classList.toggle("hidden", messages.length === 0);
  }

  function clearFieldErrors() {
    form.querySelectorAll(".errorlist.js").forEach(function (node) { node.remove(); });
    entries.forEach(function (entry) {
      entry.item.classList.remove("has-error");
      entry.item.querySelector(".file-error").textContent = "";
    });
  }

  function fieldError(name, messages) {
    var field = form.querySelector("[name=" + name + "]");
    if (!field) { return false; }
    var ul = document.createElement("ul");
    ul.className = "errorlist js";
    messages.forEach(function (message) {
      var li = document.createElement("li");
      li.textContent = message;
      ul.appendChild(li);
    });
    field.parentNode.appendChild(ul);
    return true;
  }

  function localProblem(file) {
    if (file.size === 0) { return "The file is empty."; }
    if (maxBytes && file.size > maxBytes) { return "The file is larger than " + formatSize(maxBytes) + "."; }
    return "";
  }

  function render() {
    list.textContent = "";
    entries.forEach(function (entry, index) {
      list.appendChild(entry.item);
      entry.item.dataset.index = String(index);
    });
    var tooMany = entries.length > maxFiles;
    showErrors(tooMany ? ["Too many files: at most " + maxFiles + " per case."] : []);
  }

  function makeItem(file) {
    var entry = { file: file, url: null, item: document.createElement("li") };
    var item = entry.item;
    item.className = "file-item";
    var thumb;
    if (/^image\/(png|jpeg)$/.test(file.type)) {
      entry.url = URL.createObjectURL(file);
      thumb = document.createElement("img");
      thumb.alt = "";
      thumb.addEventListener("error", function () {
        // Not a picture the browser can show (the server will say why): a text badge instead.
        var badge = document.createElement("span");
        badge.className = "thumb";
        badge.textContent = "?";
        if (thumb.parentNode) { thumb.parentNode.replaceChild(badge, thumb); }
      });
      thumb.src = entry.url;
    } else {
      thumb = document.createElement("span");
      thumb.textContent = /\.(dcm|dicom)$/i.test(file.name) ? "DICOM" : "FILE";
    }
    thumb.classList.add("thumb");
    var meta = document.createElement("div");
    meta.className = "file-meta";
    var name = document.createElement("span");
    name.className = "file-name";
    name.textContent = file.name;
    var size = document.createElement("span");
    size.className = "file-size muted";
    size.textContent = formatSize(file.size);
    var error = document.createElement("span");
    error.className = "file-error";
    error.setAttribute("role", "status");
    meta.appendChild(name);
    meta.appendChild(size);
    meta.appendChild(error);
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove " + file.name);
    remove.addEventListener("click", function () {
      if (busy) { return; }
      if (entry.url) { URL.revokeObjectURL(entry.url); }
      entries.splice(entries.indexOf(entry), 1);
      render();
    });
    item.appendChild(thumb);
    item.appendChild(meta);
    item.appendChild(remove);
    var problem = localProblem(file);
    if (problem) {
      item.classList.add("has-error");
      error.textContent = problem;
    }
    return entry;
  }

  function addFiles(fileList) {
    Array.prototype.forEach.call(fileList, function (file) { entries.push(makeItem(file)); });
    render();
  }

  input.addEventListener("change", function () {
    addFiles(input.files);
    input.value = "";
  });
  dropzone.addEventListener("click", function (event) {
    if (event.target !== input) { input.click(); }
  });
  dropzone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  ["dragenter", "dragover"].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.remove("dragging");
    });
  });
  dropzone.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files) { addFiles(event.dataTransfer.files); }
  });

  function setBusy(value) {
    busy = value;
    submit.disabled = value;
    form.classList.toggle("uploading", value);
  }

  function handleFailure(status, body) {
    progressRow.classList.add("hidden");  // the value stays, for the record, until the next try
    if (!body || typeof body !== "object") {
      showErrors([status === 403 ? "Your session has expired or the form is stale: reload the page." :
        "The upload failed (HTTP " + status + "). Please try again."]);
      return;
    }
    var general = [];
    var files = body.files || [];
    files.forEach(function (problem) {
      var entry = entries[problem.index];
      if (entry) {
        entry.item.classList.add("has-error");
        entry.item.querySelector(".file-error").textContent = problem.message + " (" + problem.code + ")";
      } else {
        general.push(problem.name + ": " + problem.message);
      }
    });
    var fields = body.fields || {};
    Object.keys(fields).forEach(function (name) {
      var messages = fields[name].map(function (item) { return item.message; });
      if (name === "__all__" || !fieldError(name, messages)) { general = general.concat(messages); }
    });
    if (!files.length) { general.unshift(body.message); }
    showErrors(general);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) { return; }
    clearFieldErrors();
    if (!entries.length) { showErrors(["Add at least one image."]); return; }
    if (entries.length > maxFiles) { showErrors(["Too many files: at most " + maxFiles + " per case."]); return; }
    var data = new FormData(form);
    data.delete("images");
    entries.forEach(function (entry) { data.append("images", entry.file, entry.file.name); });

    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Accept", "application/json");
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (token) { xhr.setRequestHeader("X-CSRFToken", token.value); }
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        var percent = Math.round((e.loaded / e.total) * 100);
        progress.value = percent;
        progress.textContent = percent + "%";
        progressLabel.textContent = percent < 100 ? "Uploading… " + percent + "%" : "Checking images…";
      }
    });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      if (xhr.responseURL && xhr.responseURL.indexOf("/accounts/login/") !== -1) {
        setBusy(false);
        showErrors(["Your session has expired: sign in again (in another tab) and resubmit."]);
        return;
      }
      if (xhr.status === 201 && body && body.url) {
        progressLabel.textContent = "Done. Opening the case…";
        window.location.assign(body.url);
        return;
      }
      setBusy(false);
      handleFailure(xhr.status, body);
    });
    xhr.addEventListener("error", function () {
      setBusy(false);
      handleFailure(0, null);
      showErrors(["Network error: the upload did not reach the server. Please try again."]);
    });
    progress.value = 0;
    progressRow.classList.remove("hidden");
    progressLabel.textContent = "Uploading…";
    setBusy(true);
    xhr.send(data);
  });
})();
