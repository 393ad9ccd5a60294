// Progressive enhancement only: every page works without this file.
// - the header menu folds behind a "Menu" button on narrow screens (it is open without JS);
// - upload areas: a file list with previews, remove / replace, drag-and-drop, clipboard paste, a
//   camera input; the limits on the file input (data-max-bytes, data-accept, data-max-files) are
//   checked before anything is sent, and the form is sent with progress per file;
// - a visible "Uploading…" state (and no double submit) while the upload is sent;
// - pages of queued or running work poll their status and reload when it changes (the no-JS
//   fallback is a <noscript> meta refresh);
// - confirmation before destructive POST buttons; copy-to-clipboard for new API tokens.
// Texts shown by this file come translated from the page's data-* attributes.
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  // A page an upload wrote in place (see the upload areas below) has no document of its own in the
  // history: going Back or Forward to it loads its address afresh.
  window.addEventListener("popstate", function (event) {
    if (event.state && event.state.prismWritten) window.location.reload();
  });

  // ---- Header menu ----------------------------------------------------------------------------
  document.querySelectorAll(".nav-toggle[aria-controls]").forEach(function (toggle) {
    var menu = document.getElementById(toggle.getAttribute("aria-controls"));
    if (!menu) return;
    toggle.hidden = false;
    function set(open) {
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    }
    toggle.addEventListener("click", function () {
      set(toggle.getAttribute("aria-expanded") !== "true");
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
        set(false);
        toggle.focus();
      }
    });
  });

  // ---- Upload areas ---------------------------------------------------------------------------
  var isMac = /Mac|iPhone|iPad/.test(navigator.platform || "");

  function fill(template, values) {
    return (template || "").replace(/\{(\w+)\}/g, function (match, key) {
      return key in values ? values[key] : match;
    });
  }

  // Sizes as the server writes them (binary units), with the page language's digits and separators.
  function formatSize(bytes) {
    var units = ["B", "KB", "MB", "GB"], unit = 0;
    while (bytes >= 1024 && unit < units.length - 1) { bytes /= 1024; unit++; }
    var number = new Intl.NumberFormat(document.documentElement.lang || undefined, { maximumSignificantDigits: 3 });
    return number.format(bytes) + " " + units[unit];
  }

  function positiveInt(value) {
    var number = parseInt(value, 10);
    return number > 0 ? number : null;
  }

  // data-accept is a comma list of MIME types ("image/*" allowed; ".ext" entries match the name).
  // A file whose type the browser does not know (a .dcm often) is left to the server to judge.
  function accepted(file, accept) {
    if (!accept || !file.type) return true;
    return accept.split(",").some(function (entry) {
      entry = entry.trim().toLowerCase();
      if (!entry) return false;
      if (entry.charAt(0) === ".") return file.name.toLowerCase().slice(-entry.length) === entry;
      if (entry.slice(-2) === "/*") return file.type.indexOf(entry.slice(0, -1)) === 0;
      return file.type.toLowerCase() === entry;
    });
  }

  function setupDropzone(zone) {
    var input = zone.querySelector("input[type=file]:not([data-camera])");
    if (!input) return;
    var form = input.form;
    var camera = zone.querySelector("input[data-camera]");
    var list = zone.querySelector("[data-file-list]");
    var message = zone.querySelector("[data-dropzone-message]");
    var count = zone.querySelector("[data-file-count]");
    var multiple = input.multiple;
    var files = [];
    var items = [];
    var canSync = typeof DataTransfer === "function";

    zone.querySelectorAll("[data-mac-keys]").forEach(function (hint) {
      if (isMac) hint.textContent = hint.textContent.replace("Ctrl+V", hint.dataset.macKeys);
    });

    function say(text) {
      message.textContent = text;
      message.hidden = !text;
    }

    // Why ``file`` may not be added, or "" when it may.
    function refusal(file, index) {
      var maxBytes = positiveInt(input.dataset.maxBytes);
      if (maxBytes && file.size > maxBytes) {
        var sizes = { name: file.name, size: formatSize(file.size), max: formatSize(maxBytes) };
        return fill(zone.dataset.msgTooBig, sizes);
      }
      // Without the server's list, the chooser's own accept attribute (same syntax, plus ".ext").
      if (!accepted(file, input.dataset.accept || input.accept)) {
        return fill(zone.dataset.msgType, { name: file.name });
      }
      var maxFiles = positiveInt(input.dataset.maxFiles);
      if (multiple && maxFiles && index >= maxFiles) {
        return fill(zone.dataset.msgTooMany, { max: maxFiles, name: file.name });
      }
      return "";
    }

    // The input mirrors the list, so a plain (non-XHR) submit still sends exactly what is shown.
    function sync() {
      if (canSync) {
        var transfer = new DataTransfer();
        files.forEach(function (file) { transfer.items.add(file); });
        input.files = transfer.files;
      }
      render();
    }

    function button(text, label, onClick) {
      var element = document.createElement("button");
      element.type = "button";
      element.className = "button button-secondary button-small";
      element.textContent = text;
      element.setAttribute("aria-label", label);
      element.addEventListener("click", onClick);
      return element;
    }

    function render() {
      items.forEach(function (item) { if (item.url) URL.revokeObjectURL(item.url); });
      list.textContent = "";
      items = files.map(function (file, index) {
        var item = { file: file, li: document.createElement("li") };
        item.li.className = "file-item";
        if (file.type && file.type.indexOf("image/") === 0) {
          var preview = document.createElement("img");
          item.url = URL.createObjectURL(file);
          preview.src = item.url;
          preview.alt = "";
          preview.className = "file-preview";
          item.li.appendChild(preview);
        }
        var name = document.createElement("span");
        name.className = "file-name";
        name.textContent = file.name;
        var size = document.createElement("span");
        size.className = "file-size";
        size.textContent = formatSize(file.size);
        item.progress = document.createElement("progress");
        item.progress.max = 100;
        item.progress.value = 0;
        item.progress.hidden = true;
        item.progress.setAttribute("aria-label", fill(zone.dataset.progressLabel, { name: file.name }));
        var info = document.createElement("span");
        info.className = "file-info";
        info.append(name, size, item.progress);
        var actions = document.createElement("span");
        actions.className = "file-actions";
        actions.append(
          button(zone.dataset.replaceText, fill(zone.dataset.replaceLabel, { name: file.name }), function () {
            replace(index);
          }),
          button(zone.dataset.removeText, fill(zone.dataset.removeLabel, { name: file.name }), function () {
            remove(index);
          })
        );
        item.li.append(info, actions);
        list.appendChild(item.li);
        return item;
      });
      if (count) {
        count.hidden = files.length < 2;
        count.textContent = fill(zone.dataset.count, { n: files.length });
      }
    }

    function add(chosen) {
      var notes = [];
      var next = multiple ? files.slice() : [];
      Array.prototype.forEach.call(chosen, function (file) {
        var why = refusal(file, next.length);
        if (why) notes.push(why);
        else if (multiple) next.push(file);
        else next = [file];
      });
      files = next;
      say(notes.join(" "));
      sync();
    }

    function remove(index) {
      files.splice(index, 1);
      say("");
      sync();
      (list.querySelector("button") || input).focus();
    }

    function replace(index) {
      var chooser = document.createElement("input");
      chooser.type = "file";
      chooser.accept = input.accept;
      chooser.addEventListener("change", function () {
        var file = chooser.files[0];
        if (!file) return;
        var why = refusal(file, index);
        say(why);
        if (!why) {
          files[index] = file;
          sync();
        }
      });
      chooser.click();
    }

    input.addEventListener("change", function () {
      // The browser replaced the input's files with the new choice: add it to the list instead.
      var chosen = Array.prototype.slice.call(input.files);
      if (canSync) add(chosen);
      else { files = chosen; render(); }
    });
    if (camera) camera.addEventListener("change", function () {
      add(camera.files);
      camera.value = "";  // the photo is in the list now; do not send it twice
    });

    var depth = 0;
    zone.addEventListener("dragenter", function (event) {
      event.preventDefault();
      depth++;
      zone.classList.add("dragover");
    });
    zone.addEventListener("dragover", function (event) { event.preventDefault(); });
    zone.addEventListener("dragleave", function () {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("dragover");
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      depth = 0;
      zone.classList.remove("dragover");
      if (event.dataTransfer && event.dataTransfer.files.length) add(event.dataTransfer.files);
    });
    document.addEventListener("paste", function (event) {
      var pasted = [];
      var clipboard = (event.clipboardData && event.clipboardData.items) || [];
      for (var i = 0; i < clipboard.length; i++) {
        if (clipboard[i].kind === "file" && clipboard[i].type.indexOf("image/") === 0) {
          var blob = clipboard[i].getAsFile();
          var name = "pasted-" + Date.now() + "-" + i + "." + (blob.type.split("/")[1] || "png");
          pasted.push(new File([blob], name, { type: blob.type }));
        }
      }
      if (!pasted.length) return;
      event.preventDefault();
      add(pasted);
    });

    // Sent with XMLHttpRequest for the upload progress; the answer (the record, or the form with its
    // errors) replaces the page as a normal submit would. Registered before the busy-form handler,
    // which marks the form as submitting and so guards against a second send.
    if (form && window.FormData) form.addEventListener("submit", function (event) {
      if (!files.length || form.dataset.submitting || event.defaultPrevented) return;
      event.preventDefault();
      var data = new FormData(form);
      data.delete(input.name);
      files.forEach(function (file) { data.append(input.name, file, file.name); });
      var request = new XMLHttpRequest();
      request.open("POST", form.action || window.location.href);
      items.forEach(function (item) { item.progress.hidden = false; });
      request.upload.addEventListener("progress", function (progress) {
        // The files travel in list order: each one's share of the bytes sent so far.
        var total = progress.lengthComputable ? progress.total : 0;
        var sizes = files.reduce(function (sum, file) { return sum + file.size; }, 0);
        var sent = progress.loaded - Math.max(0, total - sizes);  // the other fields, roughly
        items.forEach(function (item) {
          var share = item.file.size ? Math.min(1, Math.max(0, sent / item.file.size)) : 1;
          item.progress.value = Math.round(share * 100);
          sent -= item.file.size;
        });
      });
      request.addEventListener("load", function () {
        var url = request.responseURL || window.location.href;
        document.open();
        document.write(request.responseText);
        document.close();
        if (url !== window.location.href) {
          // Two history entries, as a plain submit leaves; both marked, so Back and Forward reload them.
          window.history.replaceState({ prismWritten: true }, "");
          window.history.pushState({ prismWritten: true }, "", url);
        }
      });
      request.addEventListener("error", function () {
        items.forEach(function (item) { item.progress.hidden = true; });
        say(zone.dataset.msgFailed);
        delete form.dataset.submitting;
        var submit = form.querySelector("button[type=submit]");
        if (submit) submit.disabled = false;
        var busy = form.querySelector("[data-busy]");
        if (busy) busy.hidden = true;
      });
      request.send(data);
    });
  }

  document.querySelectorAll("[data-dropzone]").forEach(setupDropzone);

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

  // Explanations: hovering over or focusing one of the caption's words shows its heatmap; a click keeps
  // it (aria-pressed); leaving the words goes back to the kept word, or the whole caption's map.
  document.querySelectorAll("[data-explain-words]").forEach(function (group) {
    var overlay = document.getElementById(group.dataset.explainWords);
    if (!overlay) return;
    var overall = overlay.getAttribute("src");
    var kept = null;
    function show(button) {
      group.querySelectorAll("button").forEach(function (word) {
        word.setAttribute("aria-pressed", String(word === button));
      });
      overlay.setAttribute("src", button ? button.dataset.overlay : overall);
    }
    function word(event) { return event.target.closest ? event.target.closest("button[data-overlay]") : null; }
    group.addEventListener("mouseover", function (event) { var b = word(event); if (b) show(b); });
    group.addEventListener("focusin", function (event) { var b = word(event); if (b) show(b); });
    group.addEventListener("mouseleave", function () { show(kept); });
    group.addEventListener("focusout", function (event) { if (!group.contains(event.relatedTarget)) show(kept); });
    group.addEventListener("click", function (event) {
      var b = word(event);
      if (!b) return;
      kept = kept === b ? null : b;
      show(kept || b);
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
