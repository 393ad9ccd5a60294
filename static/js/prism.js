// Progressive enhancement only: every page works without this file.
// - drag-and-drop (one file or many: a batch) and clipboard paste onto the image field, with a preview;
// - a visible "Uploading…" state (and no double submit) while the upload is sent;
// - pages of queued or running work poll their status and reload when it changes (the no-JS
//   fallback is a <noscript> meta refresh);
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

  function showCount(zone, count) {
    var note = zone.querySelector("[data-file-count]");
    if (!note) return;
    note.hidden = count < 2;
    note.textContent = note.dataset.template.replace("{n}", count);
  }

  function setFiles(zone, files) {
    var input = zone.querySelector("input[type=file]");
    if (!input || !files.length) return;
    var transfer = new DataTransfer();
    for (var i = 0; i < files.length; i++) transfer.items.add(files[i]);
    input.files = transfer.files;
    showPreview(zone, files[0]);
    showCount(zone, files.length);
  }

  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    if (input) input.addEventListener("change", function () {
      showPreview(zone, input.files[0]);
      showCount(zone, input.files.length);
    });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) setFiles(zone, event.dataTransfer.files);
    });
    document.addEventListener("paste", function (event) {
      var items = (event.clipboardData && event.clipboardData.items) || [];
      for (var i = 0; i < items.length; i++) {
        if (items[i].kind === "file" && items[i].type.indexOf("image/") === 0) {
          var blob = items[i].getAsFile();
          var name = "pasted-" + Date.now() + "." + (blob.type.split("/")[1] || "png");
          setFiles(zone, [new File([blob], name, { type: blob.type })]);
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

  // Record and batch pages while work is queued or running: poll, and reload once something moved,
  // unless the user has started filling in a form on the page: then say so instead of reloading,
  // so nothing typed, drawn or chosen is lost.
  var editing = false;
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    ["input", "change"].forEach(function (type) {
      form.addEventListener(type, function () { editing = true; });
    });
  });
  document.querySelectorAll("[data-poll]").forEach(function (panel) {
    var interval = 1500;
    function check() {
      fetch(panel.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data) return;
          var done = data.progress ? data.progress.done : data.done + data.failed;
          var status = data.status || (data.finished ? "finished" : "running");
          if (String(done) !== panel.dataset.pollDone || (panel.dataset.pollStatus && status !== panel.dataset.pollStatus)) {
            if (!editing) {
              window.location.reload();
              return;
            }
            var notice = document.createElement("p");
            var link = document.createElement("a");
            link.href = window.location.href;
            link.textContent = panel.dataset.pollReady || "Reload";
            notice.appendChild(link);
            panel.appendChild(notice);
            return;
          }
          interval = Math.min(interval * 1.3, 10000);
          setTimeout(check, interval);
        })
        .catch(function () { setTimeout(check, 10000); });
    }
    setTimeout(check, interval);
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
