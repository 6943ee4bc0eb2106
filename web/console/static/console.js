// iotauth console: the only script. Copy buttons for secrets shown once; nothing else.
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
});
