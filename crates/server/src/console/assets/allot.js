// Allot's own script: the tri-state boxes of Manage licenses, and on a
// narrow screen the org's tab row scrolled to the page shown. Everything
// else works without it. A box whose row starts mixed (some of the
// selected users hold the product) shows as indeterminate; a click (or
// Space) cycles: all -> none -> as it was. Its hidden "keep" field tells
// the server whether the row is still left as it was.
(function () {
  "use strict";
  function setUp(root) {
    root.querySelectorAll("input[type=checkbox][data-keep]").forEach(function (box) {
      if (box.dataset.ready) { return; }
      box.dataset.ready = "1";
      var keep = document.getElementById(box.dataset.keep);
      if (!keep) { return; }
      // Only a row that starts mixed has a third state; others toggle as usual.
      if (box.dataset.was !== "some") { return; }
      box.dataset.state = keep.value === "1" ? "keep" : (box.checked ? "all" : "none");
      box.indeterminate = box.dataset.state === "keep";
      box.addEventListener("click", function () {
        var prev = box.dataset.state;
        var next = prev === "keep" ? "all" : (prev === "all" ? "none" : "keep");
        box.dataset.state = next;
        keep.value = next === "keep" ? "1" : "0";
        box.checked = next === "all";
        box.indeterminate = next === "keep";
      });
    });
  }
  function showCurrentTab() {
    var current = document.querySelector("nav.tabs a[aria-current=page]");
    var row = current && current.closest("ul");
    if (row && row.scrollWidth > row.clientWidth) {
      row.scrollLeft = current.offsetLeft - row.offsetLeft - 16;
    }
  }
  document.addEventListener("DOMContentLoaded", function () { setUp(document); showCurrentTab(); });
  window.addEventListener("resize", showCurrentTab);
  document.addEventListener("htmx:load", function (e) { setUp(e.target); });
})();
