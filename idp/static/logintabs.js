// 个人 / 法人 tabs on the login page (idp/templates/idp/_login_tabs.html): the ARIA tabs pattern with
// manual activation. Each tab is a link to its view of the page (?as=person, ?as=org), so the page works
// without this script; the script adds the keyboard of the pattern: Left/Right/Home/End move the focus
// between the tabs (roving tabindex), Enter or Space opens the focused one.
(function () {
  "use strict";
  var list = document.querySelector("[role=tablist][data-login-tabs]");
  if (!list) { return; }
  var tabs = Array.prototype.slice.call(list.querySelectorAll("[role=tab]"));
  list.addEventListener("keydown", function (event) {
    var at = tabs.indexOf(document.activeElement);
    if (at < 0) { return; }
    var to = null;
    if (event.key === "ArrowRight") { to = (at + 1) % tabs.length; }
    else if (event.key === "ArrowLeft") { to = (at - 1 + tabs.length) % tabs.length; }
    else if (event.key === "Home") { to = 0; }
    else if (event.key === "End") { to = tabs.length - 1; }
    else if (event.key === " ") { event.preventDefault(); tabs[at].click(); return; }
    if (to === null) { return; }
    event.preventDefault();
    tabs.forEach(function (tab, i) { tab.setAttribute("tabindex", i === to ? "0" : "-1"); });
    tabs[to].focus();
  });
})();
