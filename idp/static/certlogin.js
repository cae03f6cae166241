// USB-key login: fetch a one-time challenge from the IdP, have the local agent
// (hallmark-key serve, on 127.0.0.1) sign it with the key on the USB key, post the
// signature, certificate and chain back, and follow where the IdP sends us.
// The agent signs only after the holder confirms on its own page: it answers the
// request with a pending request id and the address of that page, which we open in
// a popup, then wait for the outcome (GET <result_url>?wait=...) and close the popup.
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

  function openConfirmation(popup, url) {
    if (popup && !popup.closed) {
      popup.location.href = url;
      return popup;
    }
    popup = window.open(url, "hallmark-key-confirm", "popup,width=680,height=760");
    if (!popup) {  // blocked: the holder opens the agent's page from a link
      var link = document.createElement("a");
      link.href = url;
      link.target = "_blank";
      link.textContent = url;
      status.appendChild(document.createTextNode(" "));
      status.appendChild(link);
    }
    return popup;
  }

  // A USB key may hold a person's and an enterprise's login certificate (the agent then asks which one):
  // this page knows which it wants, the enterprise's (NTRCN-) to act for it, the person's (IDCCN-) otherwise.
  function chooseFor(purpose, certificates) {
    var mark = purpose === "enterprise" ? "NTRCN-" : "IDCCN-";
    var fit = (certificates || []).filter(function (c) { return String(c.subject || "").indexOf(mark) >= 0; });
    return fit.length === 1 ? fit[0].id : null;
  }

  async function agentSign(agent, body, popup, purpose) {
    var ask = function (request) {
      return fetch(agent + "/v1/sign", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
      });
    };
    var answer = await ask(body);
    if (answer.status === 409) {
      var refusal = await answer.clone().json().catch(function () { return {}; });
      var chosen = refusal.error === "choose_certificate" && chooseFor(purpose, refusal.certificates);
      if (chosen) answer = await ask(Object.assign({}, body, { certificate: chosen }));
    }
    if (!answer.ok) throw new Error(messages.agent_refused.replace("%(reason)s", await readProblem(answer)));
    var pending = await answer.json();
    popup = openConfirmation(popup, pending.confirm_url);
    try {
      for (;;) {
        var outcome = await fetch(pending.result_url + "?wait=20");
        if (outcome.status === 202) continue;  // the holder has not decided yet
        if (!outcome.ok) throw new Error(messages.agent_refused.replace("%(reason)s", await readProblem(outcome)));
        return await outcome.json();
      }
    } finally {
      if (popup && !popup.closed) popup.close();
    }
  }

  async function signIn() {
    var csrf = box.getAttribute("data-csrf");
    var next = box.getAttribute("data-next");
    var purpose = box.getAttribute("data-purpose");
    var agent = box.getAttribute("data-agent");
    button.disabled = true;
    show(messages.working);
    // Opened now, while the click still counts, so that no popup blocker stands in the way;
    // it goes to the agent's confirmation page once the agent has the request.
    var popup = window.open("about:blank", "hallmark-key-confirm", "popup,width=680,height=760");
    try {
      var asked = await fetch("/login/cert/challenge", {
        method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" },
        body: form({ csrf_token: csrf, purpose: purpose }),
      });
      if (!asked.ok) throw new Error(await readProblem(asked));
      var challenge = await asked.json();

      var signed;
      try {
        signed = await agentSign(
          agent, { purpose: "login", data: base64url(challenge.challenge), description: challenge.description }, popup, purpose
        );
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
      if (popup && !popup.closed) popup.close();
      show((e && e.message) || messages.failed, "error");
      button.disabled = false;
    }
  }

  button.addEventListener("click", signIn);
})();
