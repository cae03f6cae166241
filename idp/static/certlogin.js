// USB-key login: fetch a one-time challenge from the IdP, have the local agent
// (hallmark-key serve, on 127.0.0.1) sign it with the key on the USB key, post the
// signature, certificate and chain back, and follow where the IdP sends us.
// The markup is idp/templates/idp/_certlogin.html; messages come translated from it.
(function () {
  "use strict";
  var box = document.getElementById("cert-login");
  if (!box || !window.fetch) return;
  var button = box.querySelector("[data-cert-login]");
  var status = box.querySelector("[data-status]");
  var messages = JSON.parse(box.getAttribute("data-messages") || "{}");

  function show(text, kind) {
    status.textContent = text;
    status.className = "alert " + (kind || "info");
    status.hidden = false;
  }

  function base64url(text) {
    var bytes = new TextEncoder().encode(text);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function form(fields) {
    var body = new URLSearchParams();
    Object.keys(fields).forEach(function (name) { body.append(name, fields[name]); });
    return body;
  }

  async function readProblem(response) {
    try {
      var body = await response.json();
      return body.detail || body.error_description || body.error || messages.failed;
    } catch (e) {
      return messages.failed;
    }
  }

  async function signIn() {
    var csrf = box.getAttribute("data-csrf");
    var next = box.getAttribute("data-next");
    var purpose = box.getAttribute("data-purpose");
    var agent = box.getAttribute("data-agent");
    button.disabled = true;
    show(messages.working);
    try {
      var asked = await fetch("/login/cert/challenge", {
        method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" },
        body: form({ csrf_token: csrf, purpose: purpose }),
      });
      if (!asked.ok) throw new Error(await readProblem(asked));
      var challenge = await asked.json();

      var signed;
      try {
        var answer = await fetch(agent + "/v1/sign", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ purpose: "login", data: base64url(challenge.challenge), description: challenge.description }),
        });
        if (!answer.ok) {
          var reason = await readProblem(answer);
          throw new Error(messages.agent_refused.replace("%(reason)s", reason));
        }
        signed = await answer.json();
      } catch (e) {
        throw new Error(e && e.message && e.message.indexOf(messages.agent_refused.split("%(")[0]) === 0 ? e.message : messages.no_agent);
      }

      show(messages.done, "ok");
      var posted = await fetch("/login/cert", {
        method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" },
        body: form({
          csrf_token: csrf, next: next, challenge: challenge.challenge, signature: signed.signature || "",
          algorithm: signed.algorithm || "", certificate: signed.certificate || "", chain: JSON.stringify(signed.chain || []),
        }),
      });
      if (!posted.ok) throw new Error(await readProblem(posted));
      var result = await posted.json();
      window.location.assign(result.redirect || "/account");
    } catch (e) {
      show((e && e.message) || messages.failed, "error");
      button.disabled = false;
    }
  }

  button.addEventListener("click", signIn);
})();
