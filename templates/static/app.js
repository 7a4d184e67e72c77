// The only script of the pages (the CSP allows no inline script). Everything works without it;
// it only adds the print button and the start page's self-updating "today" lists.
"use strict";
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
