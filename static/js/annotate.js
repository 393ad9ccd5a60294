// Drawing regions on a clinical image: drag for a rectangle, click for a point. The page's form
// takes the numbers (in image pixels) and works without this script; this only fills it in.
(function () {
  "use strict";
  var form = document.querySelector("form[data-annotate]");
  var wrapper = document.querySelector(".annotated");
  if (!form || !wrapper) { return; }
  var image = wrapper.querySelector("img");
  image.style.touchAction = "none";  // drawing, not scrolling, on this one image (only with the form)
  var help = form.querySelector(".js-only");
  if (help) { help.hidden = false; }
  var imageWidth = Number(form.dataset.imageWidth), imageHeight = Number(form.dataset.imageHeight);
  var box = document.createElement("div");
  box.className = "drawing";
  wrapper.appendChild(box);
  var start = null;

  function toImage(event) {
    var rect = image.getBoundingClientRect();
    var x = (event.clientX - rect.left) / rect.width * imageWidth;
    var y = (event.clientY - rect.top) / rect.height * imageHeight;
    return { x: Math.max(0, Math.min(imageWidth, x)), y: Math.max(0, Math.min(imageHeight, y)),
             px: event.clientX - rect.left, py: event.clientY - rect.top };
  }
  function set(name, value) { form.elements[name].value = value === "" ? "" : Math.round(value); }

  image.addEventListener("pointerdown", function (event) {
    event.preventDefault();
    start = toImage(event);
    image.setPointerCapture(event.pointerId);
  });
  image.addEventListener("pointermove", function (event) {
    if (!start) { return; }
    var now = toImage(event);
    box.style.display = "block";
    box.style.left = Math.min(start.px, now.px) + "px";
    box.style.top = Math.min(start.py, now.py) + "px";
    box.style.width = Math.abs(now.px - start.px) + "px";
    box.style.height = Math.abs(now.py - start.py) + "px";
  });
  image.addEventListener("pointerup", function (event) {
    if (!start) { return; }
    var end = toImage(event);
    var w = Math.abs(end.x - start.x), h = Math.abs(end.y - start.y);
    var isPoint = w < 3 && h < 3;
    form.elements.shape.value = isPoint ? "point" : "rect";
    set("x", isPoint ? start.x : Math.min(start.x, end.x));
    set("y", isPoint ? start.y : Math.min(start.y, end.y));
    set("width", isPoint ? "" : w);
    set("height", isPoint ? "" : h);
    if (isPoint) { box.style.display = "none"; }
    start = null;
    form.elements.label.focus();
  });
}());
