// A button marked data-print opens the browser's print dialog. (The app's Content-Security-
// Policy allows no inline handler, so the button cannot say onclick="window.print()".)
(function () {
  "use strict";
  document.querySelectorAll("button[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
})();
