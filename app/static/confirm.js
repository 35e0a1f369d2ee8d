/* A form with data-confirm asks before it is sent: destructive buttons, with no inline script. */
$(function () {
  "use strict";
  $(document).on("submit", "form[data-confirm]", function (event) {
    if (!window.confirm(String($(this).data("confirm")))) { event.preventDefault(); }
  });
});
