/* The account page: change the password without leaving the page; the answer shows below the form. */
$(function () {
  "use strict";
  const form = $("#changepwd");
  if (!form.length) { return; }
  $.ajaxSetup({headers: {"X-CSRFToken": $('meta[name="csrf-token"]').attr("content")}});

  form.on("submit", function (event) {
    event.preventDefault();
    const box = $("#pwd-alert");
    function report(ok, message) {
      box.text(message).prop("hidden", false)
        .toggleClass("alert-success", ok).toggleClass("alert-danger", !ok);
    }
    if ($("#new_password").val() !== $("#confirm_password").val()) {
      report(false, "The new passwords do not match.");
      return;
    }
    $.post(form.attr("action"), form.serialize()).done(function (reply) {
      report(true, reply.message || "Password changed.");
    }).fail(function (xhr) {
      report(false, (xhr.responseJSON && xhr.responseJSON.error) || "The password was not changed.");
    }).always(function () {
      form.find("input[type=password]").val("");
    });
  });
});
