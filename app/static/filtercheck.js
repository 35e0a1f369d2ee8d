/* The filter dry-run on Search: "Check" asks /filter_check what the expression matches among the
   newest stored messages (of the chosen subscription, if any) and shows the count and a sample,
   or the syntax error with its position. */
$(function () {
  "use strict";
  const button = $("#filter-check");
  if (!button.length) { return; }
  const input = $("#filter");
  const result = $("#filter-check-result");
  const checkUrl = String(button.data("check-url"));

  function count(number) { return Number(number).toLocaleString("en-US"); }

  function showError(expression, error) {
    const position = Math.max(0, Math.min(Number(error.position) || 0, expression.length));
    const message = error.message.charAt(0).toUpperCase() + error.message.slice(1);
    const marked = $("<pre class='filter-marked small mb-0'>").append(
      document.createTextNode(expression.slice(0, position)),
      $("<mark class='filter-error-at'>").text(expression.slice(position, position + 1) || " "),
      document.createTextNode(expression.slice(position + 1)));
    result.empty().append(
      $("<div class='alert alert-danger py-2 mb-0' id='filter-check-error'>").append(
        $("<div>").text(message + " at " + position + "."), marked));
    input.addClass("is-invalid").trigger("focus");
    input.get(0).setSelectionRange(position, position);
  }

  function showCount(reply) {
    const where = (reply.scope_kind === "all" ? "in " : "on ") + reply.scope;
    const sentence = reply.scanned === 0
      ? "No stored messages " + where + " to check against."
      : "Matches " + count(reply.matched) + " of the " + (reply.complete ? "" : "last ") + count(reply.scanned) +
        " " + (reply.scanned === 1 ? "message" : "messages") + (reply.complete ? " stored " : " ") + where + ".";
    const box = $("<div class='alert alert-success py-2 mb-0' id='filter-check-count'>").append(
      $("<div>").text(sentence));
    if (reply.sample.length) {
      const list = $("<ul class='list-unstyled small mb-0 mt-1' id='filter-check-sample'>");
      reply.sample.forEach(function (message) {
        const row = $("<li>").append($("<a>").attr("href", message.url).text(message.message_id));
        if (message.publish_time) {
          row.append(" ", $("<time>").attr("datetime", message.publish_time).text(message.publish_time));
        }
        Object.keys(message.attributes).sort().slice(0, 4).forEach(function (key) {
          row.append(" ", $("<span class='badge text-bg-light border'>").text(key + "=" + message.attributes[key]));
        });
        list.append(row);
      });
      box.append(list);
    }
    result.empty().append(box);
    input.removeClass("is-invalid");
    if (window.pubsubDisplay) { window.pubsubDisplay.formatTimes(result.get(0)); }
  }

  button.on("click", function () {
    const expression = String(input.val());
    // Search may test the data as well; a subscription's filter may not (data=1 only here).
    const query = {filter: expression, data: 1};
    const subscription = $("#sub").val();
    if (subscription) { query.subscription = subscription; }
    button.prop("disabled", true);
    result.prop("hidden", false).text("Checking…");
    $.getJSON(checkUrl, query).done(function (reply) {
      if (reply.valid) { showCount(reply); } else { showError(expression, reply.error); }
    }).fail(function (xhr) {
      result.empty().append($("<div class='alert alert-warning py-2 mb-0'>")
        .text("The check failed (" + (xhr.status || "no answer") + "); try again."));
    }).always(function () { button.prop("disabled", false); });
  });
});
