// Grading page shortcuts (progressive enhancement: the links work without this file).
// j or ArrowRight opens the next submission, k or ArrowLeft the previous one; never while the
// teacher is typing in a field, nor with a modifier key held (browser and screen-reader shortcuts).
(function () {
  "use strict";

  var KEYS = { j: "next", ArrowRight: "next", k: "prev", ArrowLeft: "prev" };

  function typing(target) {
    if (!target) return false;
    var tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  document.addEventListener("keydown", function (event) {
    var direction = KEYS[event.key];
    if (!direction || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (typing(event.target)) return;
    var link = document.querySelector('a[data-shortcut="' + direction + '"]');
    if (!link) return;
    event.preventDefault();
    window.location.href = link.href;
  });
})();
