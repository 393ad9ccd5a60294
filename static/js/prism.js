// Progressive enhancement only: every page works without this file.
// - drag-and-drop and clipboard paste onto the image field, with a preview;
// - a visible "Analysing…" state (and no double submit) while the server runs the models;
// - confirmation before destructive POST buttons; copy-to-clipboard for new API tokens.
// Texts shown by this file come translated from the page's data-* attributes.
(function () {
  "use strict";

  function showPreview(zone, file) {
    var preview = zone.querySelector("[data-preview]");
    if (!preview || !file || !file.type || file.type.indexOf("image/") !== 0) return;
    preview.src = URL.createObjectURL(file);
    preview.alt = preview.dataset.alt + (file.name ? ": " + file.name : "");
    preview.hidden = false;
  }

  function setFile(zone, file) {
    var input = zone.querySelector("input[type=file]");
    if (!input || !file) return;
    var transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    showPreview(zone, file);
  }

  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    if (input) input.addEventListener("change", function () { showPreview(zone, input.files[0]); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) setFile(zone, event.dataTransfer.files[0]);
    });
    document.addEventListener("paste", function (event) {
      var items = (event.clipboardData && event.clipboardData.items) || [];
      for (var i = 0; i < items.length; i++) {
        if (items[i].kind === "file" && items[i].type.indexOf("image/") === 0) {
          var blob = items[i].getAsFile();
          var name = "pasted-" + Date.now() + "." + (blob.type.split("/")[1] || "png");
          setFile(zone, new File([blob], name, { type: blob.type }));
          event.preventDefault();
          return;
        }
      }
    });
  });

  document.querySelectorAll("[data-busy-form]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.submitting) { event.preventDefault(); return; }
      form.dataset.submitting = "1";
      var busy = form.querySelector("[data-busy]");
      if (busy) busy.hidden = false;
      var button = form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
      // If the server never answers (network drop), let the user try again after a while.
      setTimeout(function () {
        delete form.dataset.submitting;
        if (button) button.disabled = false;
        if (busy) busy.textContent = busy.dataset.stillWaiting;
      }, 90000);
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = document.querySelector(button.dataset.copy);
      if (target && navigator.clipboard) {
        navigator.clipboard.writeText(target.textContent.trim()).then(function () { button.textContent = button.dataset.copied; });
      }
    });
  });
})();
