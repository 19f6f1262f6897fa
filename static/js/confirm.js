/*
 * Confirmation before destructive actions, without inline script or eval (CSP script-src 'self'):
 * a form with data-confirm="question" opens a modal <dialog> when submitted; only "Yes" submits it.
 * Optional data-confirm-yes / data-confirm-no name the buttons.
 */
(function () {
  "use strict";

  var dialog = null;
  var pendingForm = null;
  var pendingSubmitter = null;

  function build() {
    dialog = document.createElement("dialog");
    dialog.className = "confirm-dialog";
    dialog.id = "confirm-dialog";
    dialog.setAttribute("aria-labelledby", "confirm-dialog-text");
    var text = document.createElement("p");
    text.id = "confirm-dialog-text";
    var actions = document.createElement("div");
    actions.className = "actions";
    var yes = document.createElement("button");
    yes.type = "button";
    yes.className = "danger";
    yes.id = "confirm-yes";
    var no = document.createElement("button");
    no.type = "button";
    no.id = "confirm-no";
    actions.appendChild(no);
    actions.appendChild(yes);
    dialog.appendChild(text);
    dialog.appendChild(actions);
    document.body.appendChild(dialog);
    no.addEventListener("click", function () { dialog.close("no"); });
    yes.addEventListener("click", function () { dialog.close("yes"); });
    dialog.addEventListener("close", function () {
      var form = pendingForm;
      var submitter = pendingSubmitter;
      pendingForm = null;
      pendingSubmitter = null;
      if (dialog.returnValue === "yes" && form) {
        form.dataset.confirmed = "1";
        if (form.requestSubmit) form.requestSubmit(submitter || undefined); else form.submit();
      } else if (submitter) {
        submitter.focus();
      }
    });
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || !form.dataset || !form.dataset.confirm) return;
    if (form.dataset.confirmed === "1") {
      delete form.dataset.confirmed;
      return; // confirmed: let it through
    }
    e.preventDefault();
    if (!dialog) build();
    pendingForm = form;
    pendingSubmitter = e.submitter || form.querySelector("[type=submit]");
    dialog.returnValue = "";
    dialog.querySelector("#confirm-dialog-text").textContent = form.dataset.confirm;
    dialog.querySelector("#confirm-yes").textContent = form.dataset.confirmYes || "Yes, go ahead";
    dialog.querySelector("#confirm-no").textContent = form.dataset.confirmNo || "No, keep it";
    dialog.showModal();
    dialog.querySelector("#confirm-no").focus();
  }, true);

  window.FractureConfirm = { pending: function () { return !!pendingForm; } };
})();
