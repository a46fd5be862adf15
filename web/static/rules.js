// Earning-rule editor: show the fields of the chosen type, and refresh the simulation
// preview as the rule or the sample basket changes (the server evaluates; this only
// posts the form and swaps in the HTML it returns). Without JavaScript the Preview
// button posts the same form and the whole page comes back.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var form = document.getElementById("rule-form");
  if (!form) { return; }

  var typeSelect = document.getElementById("rule-type");
  var typeInput = form.querySelector("input[type=hidden][name=type]");
  function showTypeFields() {
    var type = typeInput ? typeInput.value : (typeSelect ? typeSelect.value : "");
    form.querySelectorAll("[data-types]").forEach(function (block) {
      var on = block.getAttribute("data-types").split(" ").indexOf(type) >= 0;
      block.classList.toggle("off", !on);
    });
  }
  if (typeSelect) { typeSelect.addEventListener("change", showTypeFields); }
  showTypeFields();

  var addLine = document.getElementById("add-line");
  var lines = document.getElementById("basket-lines");
  if (addLine && lines) {
    addLine.hidden = false;
    addLine.addEventListener("click", function () {
      var rows = lines.querySelectorAll("tr.basket-line");
      var copy = rows[rows.length - 1].cloneNode(true);
      copy.querySelectorAll("input").forEach(function (input) { input.value = ""; });
      lines.appendChild(copy);
    });
  }

  var timer = null;
  var sequence = 0;
  function refresh() {
    var mine = ++sequence;
    fetch(form.getAttribute("data-preview"), {
      method: "POST",
      body: new FormData(form),
      headers: { "X-Preview": "fragment" },
      credentials: "same-origin"
    }).then(function (response) {
      return response.text();
    }).then(function (html) {
      if (mine !== sequence) { return; }   // a later edit already asked again
      var current = document.getElementById("preview-result");
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var fresh = holder.querySelector("#preview-result");
      if (current && fresh) { current.replaceWith(fresh); }
    });
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  }
  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  refresh();
})();
