// 亮证: count the QR code's minutes down, then hide it and say it expired (the server refuses it after that anyway).
// Counts from when the page was loaded, so a phone whose clock is wrong still shows the right time left.
(function () {
  "use strict";
  var live = document.getElementById("qr-live");
  var expired = document.getElementById("qr-expired");
  var left = document.getElementById("qr-left");
  if (!live || !expired || !left) return;
  var end = Date.now() + Number(live.getAttribute("data-seconds")) * 1000;
  var timer = null;
  function tick() {
    var seconds = Math.max(0, Math.ceil((end - Date.now()) / 1000));
    left.textContent = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
    if (seconds > 0) return;
    clearInterval(timer);
    live.hidden = true;
    expired.hidden = false;
    var refresh = document.getElementById("qr-refresh");
    if (refresh) refresh.focus();
  }
  timer = setInterval(tick, 1000);
  tick();
})();
