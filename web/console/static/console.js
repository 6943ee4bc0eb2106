// iotauth console: the console's script. Copy buttons for secrets shown once, and Watch live on the
// pages that carry a #watch section (docs/console.md): the MQTT part is /live's watch.js, loaded before
// this file on those pages only.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.getAttribute("data-copy"));
      if (!el) { return; }
      var text = el.textContent;
      var done = function () { btn.textContent = "Copied"; btn.classList.add("copied"); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallback(el, done); });
      } else {
        fallback(el, done);
      }
    });
  });
  // Without the clipboard API: select the text and ask for a copy; it stays selected for a manual one.
  function fallback(el, done) {
    selectText(el);
    try { if (document.execCommand("copy")) { done(); } } catch (e) { /* selected for a manual copy */ }
  }
  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  watchLive();
});

// watchLive wires a #watch section: its form starts watching the agent, its Stop button stops. The
// credential comes from the console (POST data-credential-url with the page's CSRF token) for each
// connection and renewal, and stays in watch.js's variables: nothing is stored in the browser.
function watchLive() {
  var box = document.getElementById("watch");
  var W = window.iotauthWatch;
  if (!box) { return; }
  var el = function (id) { return document.getElementById(id); };
  var status = el("watch-status");
  if (!W) {
    status.textContent = "The live view's script did not load; reload the page.";
    status.dataset.state = "error";
    return;
  }
  var start = el("watch-live") || el("watch-start");
  var stop = el("watch-stop");
  var credentials = function (agent) {
    var body = new URLSearchParams();
    body.set("csrf", box.dataset.csrf);
    body.set("agent", agent);
    return fetch(box.dataset.credentialUrl, { method: "POST", body: body, credentials: "same-origin", cache: "no-store",
      redirect: "error", headers: { Accept: "application/json" } }).then(function (res) {
      return res.json().catch(function () { return null; }).then(function (data) {
        if (res.status === 401) { throw new W.SignedOut("Your console session has ended; sign in again to watch."); }
        if (!res.ok) { throw new Error((data && data.detail) || ("the console answered " + res.status + " for a credential")); }
        return data && data.mqtt;
      });
    });
  };
  var watcher = W.create({
    status: status, messages: el("watch-messages"), session: el("watch-session"), topic: null,
    wsUrl: box.dataset.broker, credentials: credentials, zone: box.dataset.zone,
    onSignedOut: function (message) {
      watcher.setStatus(message, "error");
      el("watch-signin").hidden = false;
      start.disabled = false;
      stop.disabled = true;
    },
  });
  var run = function () {
    var agent = el("watch-agent").value;
    start.disabled = true;
    stop.disabled = false;
    watcher.watch(agent).then(function () {
      start.disabled = false;
    }, function (err) {
      watcher.fail(err);
      start.disabled = false;
      stop.disabled = true;
    });
  };
  el("watch-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    run();
  });
  stop.addEventListener("click", function () {
    watcher.stop();
    watcher.setStatus("Stopped.", "idle");
    stop.disabled = true;
  });
  if (!W.bundled()) {
    watcher.setStatus(W.missing, "error");
    start.disabled = true;
  }
  box.dataset.ready = "true";
  if (box.dataset.autostart === "true" && W.bundled()) { run(); }
}
