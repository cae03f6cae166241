// The login guard on the password form (idp/people/loginguard.py): before the form is sent, ask the server
// whether this sign-in needs a proof-of-work challenge (ALTCHA format); if it does, find the number n with
// SHA-256(salt + n) == challenge, wait for the challenge's not-before time, put the solution in the form, send it.
(function () {
  "use strict";
  var form = document.getElementById("password-login");
  if (!form || !window.crypto || !window.crypto.subtle) { return; }
  var status = form.querySelector("[data-guard-status]");
  var proof = form.querySelector("input[name=altcha]");
  var busy = false;

  function hex(buffer) {
    var bytes = new Uint8Array(buffer), out = "";
    for (var i = 0; i < bytes.length; i++) { out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16); }
    return out;
  }

  async function solve(c) {
    var encoder = new TextEncoder();
    for (var n = 0; n <= c.maxnumber; n++) {
      var digest = await crypto.subtle.digest("SHA-256", encoder.encode(c.salt + n));
      if (hex(digest) === c.challenge) { return n; }
    }
    return null;
  }

  form.addEventListener("submit", async function (event) {
    if (busy) { event.preventDefault(); return; }
    if (proof.value) { return; }  // solved: let it go
    event.preventDefault();
    busy = true;
    try {
      var body = new URLSearchParams();
      body.append("csrf_token", form.getAttribute("data-csrf"));
      body.append("identifier", form.querySelector("input[name=identifier]").value);
      var answer = await fetch("/login/challenge", { method: "POST", body: body, credentials: "same-origin" });
      var c = answer.ok ? await answer.json() : { maxnumber: 0 };
      if (c.maxnumber) {
        status.hidden = false;
        var started = Date.now();
        var n = await solve(c);
        var wait = (c.delay || 0) * 1000 - (Date.now() - started);
        if (wait > 0) { await new Promise(function (r) { setTimeout(r, wait + 200); }); }
        if (n !== null) {
          proof.value = btoa(JSON.stringify({ algorithm: c.algorithm, challenge: c.challenge, number: n, salt: c.salt, signature: c.signature }));
        }
      }
    } catch (e) {
      // the server answers without a solution: the page says what to do
    }
    busy = false;
    proof.value = proof.value || "";
    HTMLFormElement.prototype.submit.call(form);
  });
})();
