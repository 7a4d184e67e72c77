// The only script of the pages (the CSP allows no inline script). Everything works without it;
// it only adds the print button, the start page's self-updating "today" lists, and names the files
// chosen with our own file buttons.
"use strict";
// Our own file buttons (templates/_forms.html): the browser's inputs hide behind them once this
// runs, and the chosen files are named beside them.
document.documentElement.classList.add("js");
document.addEventListener("change", function (e) {
  var input = e.target;
  if (!input || input.type !== "file" || !input.closest) { return; }
  var group = input.closest(".files");
  var shown = group && group.querySelector(".chosen");
  if (!shown) { return; }
  var names = [];
  group.querySelectorAll("input[type=file]").forEach(function (i) {
    for (var k = 0; k < i.files.length; k++) { names.push(i.files[k].name); }
  });
  shown.textContent = names.length ? names.join(", ") : shown.getAttribute("data-none");
});
document.addEventListener("click", function (e) {
  var t = e.target.closest && e.target.closest("[data-print]");
  if (t) { e.preventDefault(); window.print(); }
});
(function () {
  var box = document.getElementById("today");
  if (!box || !window.fetch) { return; }
  var stamp = null;
  function poll() {
    fetch(box.getAttribute("data-src"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) {
        if (!j) { return; }
        if (stamp !== null && j.stamp !== stamp) { box.innerHTML = j.html; box.setAttribute("data-updated", j.stamp); }
        stamp = j.stamp;
      })
      .catch(function () { /* the page stays as it is; try again later */ });
  }
  poll();
  setInterval(poll, 5000);
})();
