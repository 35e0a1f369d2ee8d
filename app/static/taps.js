/* The tap form on the Subscriptions page: "Check filter" asks GET /filter_check what the expression
   would have matched among the messages already stored for the topic, before any tap is created. */
$(function () {
  "use strict";
  const form = $("#watch-form");
  if (!form.length) { return; }
  const button = $("#check-filter");
  const filterInput = form.find("input[name=filter]");
  const topicInput = form.find("input[name=topic]");
  const result = $("#filter-check-result");
  const summary = $("#filter-check-summary");
  const sample = $("#filter-check-sample");
  const numbers = new Intl.NumberFormat("en-US");

  function clearError() {
    filterInput.removeClass("is-invalid");
    $("#filter-error").remove();
  }

  function showError(message, position) {
    // The field error style the form uses when the server refuses the filter.
    clearError();
    filterInput.addClass("is-invalid");
    const feedback = $('<div class="invalid-feedback" id="filter-error"></div>');
    feedback.text(typeof position === "number" ? message + " at " + position : message);
    if (typeof position === "number") {
      const expression = filterInput.val();
      // The expression with a caret under the position (positions count characters from 0).
      const pointer = $('<pre class="filter-pointer mb-0"></pre>');
      pointer.text(expression + "\n" + " ".repeat(Math.min(position, expression.length)) + "^");
      feedback.append(pointer);
    }
    filterInput.after(feedback);
    result.prop("hidden", true);
  }

  function sampleRow(message) {
    const row = $('<li class="filter-check-message"></li>');
    const link = $("<a></a>").attr("href", message.url).text(message.message_id);
    row.append(link);
    if (message.publish_time) {
      row.append(" · ", $("<time></time>").attr("datetime", message.publish_time).text(message.publish_time));
    }
    Object.keys(message.attributes || {}).sort().forEach(function (key) {
      row.append(" ", $('<span class="badge text-bg-secondary"></span>').text(key + "=" + message.attributes[key]));
    });
    return row;
  }

  function showResult(reply) {
    clearError();
    sample.empty();
    if (reply.scanned === 0) {
      summary.text("The filter is valid. No stored messages on " + reply.scope + " to try it on yet.");
    } else {
      summary.text("Matches " + numbers.format(reply.matched) + " of the last " + numbers.format(reply.scanned) +
                   " messages on " + reply.scope + (reply.matched ? "; the newest:" : "."));
      (reply.sample || []).forEach(function (message) { sample.append(sampleRow(message)); });
      if (window.pubsubDisplay) { window.pubsubDisplay.formatTimes(sample[0]); }
    }
    result.prop("hidden", false);
  }

  button.on("click", function () {
    const url = form.data("check-url");
    if (!url) {
      showError("The filter check is not available on this server.");
      return;
    }
    const query = {filter: filterInput.val()};
    if ($.trim(topicInput.val())) { query.topic = $.trim(topicInput.val()); }
    button.prop("disabled", true);
    $.getJSON(url, query).done(function (reply) {
      if (reply.valid) {
        showResult(reply);
      } else {
        showError(reply.error.message, reply.error.position);
      }
    }).fail(function (xhr) {
      showError((xhr.responseJSON && xhr.responseJSON.error) || "The filter could not be checked (HTTP " + xhr.status + ").");
    }).always(function () {
      button.prop("disabled", false);
    });
  });
});
