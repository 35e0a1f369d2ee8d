/* The message detail view: copy buttons (a target's text, or the button's own data-copy-text). */
$(function () {
  "use strict";
  $(".copy-button").on("click", function () {
    const target = $(this).attr("data-copy-target");
    const text = target ? $(target).text() : String($(this).attr("data-copy-text"));
    const status = $("#copy-status");
    function done(message) { status.text(message); }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied."); },
        function () { done("Copy was refused by the browser."); });
    } else {
      const area = $("<textarea>").val(text).appendTo("body").trigger("select");
      try { document.execCommand("copy"); done("Copied."); } catch (e) { done("Copy is not available here."); }
      area.remove();
    }
  });
});
