/* Prism: save the browser's time zone on an account that has none yet, so times are shown in it.
 *
 * base.html includes this file only for a signed-in user without a zone. It POSTs the IANA name
 * (Intl) with the page's CSRF token to the account endpoint named in data-save: a state change goes
 * through a CSRF-checked POST like every other, and the server checks the name against its own list
 * of zones. The next page is shown in the saved zone; the account page changes it at any time.
 * Without JavaScript (or Intl) nothing happens: times stay in UTC, and the page says so.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !window.fetch || !window.Intl || !Intl.DateTimeFormat) return;
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (error) {
    return;
  }
  if (!zone) return;
  var body = new URLSearchParams();
  body.set("time_zone", zone);
  body.set("csrf_token", script.getAttribute("data-csrf") || "");
  fetch(script.getAttribute("data-save"), {
    method: "POST",
    body: body,
    credentials: "same-origin",
    headers: { "X-CSRFToken": script.getAttribute("data-csrf") || "" }
  }).catch(function () { /* offline or refused: times simply stay in UTC */ });
})();
