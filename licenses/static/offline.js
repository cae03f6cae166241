// A scanned licence QR code opens /licences/v#<signed payload>. The fragment never reaches the server by itself,
// so post it to this page (a form, no inline script) to have it checked; the address keeps no payload afterwards.
(function () {
  "use strict";
  var payload = window.location.hash.slice(1);
  var form = document.getElementById("qr-form");
  var field = document.getElementById("qr-code");
  if (!payload || !form || !field) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  field.value = decodeURIComponent(payload);
  form.submit();
})();
