// Scan-to-login on the desktop login page (idp/templates/idp/_scanlogin.html, idp/device_pages.py).
// Asks the server for a QR code (an SVG it draws; the browser secret comes back in an HttpOnly cookie),
// then polls every two seconds until the phone has confirmed, refused, or the code has expired.
(function () {
  "use strict";
  var box = document.getElementById("scan-login");
  if (!box || box.offsetParent === null) { return; }  // hidden (a phone's screen): nothing to scan it with
  var img = box.querySelector("[data-qr]");
  var status = box.querySelector("[data-status]");
  var renew = box.querySelector("[data-renew]");
  var csrf = box.getAttribute("data-csrf");
  var next = box.getAttribute("data-next");
  var timer = null;

  function form(values) {
    var body = new URLSearchParams();
    Object.keys(values).forEach(function (k) { body.append(k, values[k]); });
    return body;
  }

  function say(text) { status.textContent = text; }

  function stop(text) {
    if (timer) { clearTimeout(timer); timer = null; }
    if (text) { say(text); }
    img.hidden = true;
    renew.hidden = false;
  }

  async function poll() {
    timer = null;
    var answer;
    try {
      answer = await fetch("/login/scan/poll", { method: "POST", body: form({ csrf_token: csrf }), credentials: "same-origin" });
    } catch (e) {
      timer = setTimeout(poll, 4000);
      return;
    }
    if (!answer.ok) { timer = setTimeout(poll, 4000); return; }
    var state = await answer.json();
    say(state.message);
    if (state.status === "done") {
      window.location.assign(state.next || "/account");
    } else if (state.status === "pending" || state.status === "scanned") {
      timer = setTimeout(poll, 2000);
    } else {
      stop(state.message);
    }
  }

  async function begin() {
    renew.hidden = true;
    var answer = await fetch("/login/scan/start", { method: "POST", body: form({ csrf_token: csrf, next: next }), credentials: "same-origin" });
    var body = await answer.json();
    if (!answer.ok) { stop(body.detail || ""); return; }
    img.src = body.qr;
    img.hidden = false;
    say(body.message);
    timer = setTimeout(poll, 2000);
  }

  renew.addEventListener("click", function () { begin(); });
  begin();
})();
