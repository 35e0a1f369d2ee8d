/* The search page: new matching messages every five seconds, with the filter in the URL. */
$(function () {
  "use strict";
  const box = $("#explore");
  if (!box.length || box.data("live") !== true) { return; }
  const itemsUrl = String(box.data("items-url"));
  let newestId = Number(box.data("newest-id")) || 0;
  const seenIds = new Set();
  $("#useritems tr.useritem").each(function () { seenIds.add(Number($(this).data("item-id"))); });

  function poll() {
    $.getJSON(itemsUrl, {after: newestId}).done(function (reply) {
      $("#poll-error").prop("hidden", true);
      const table = $("#useritems");
      const fresh = reply.items.filter(function (html, i) {
        if (seenIds.has(reply.ids[i])) { return false; }
        seenIds.add(reply.ids[i]);
        return true;
      });
      // Shown now, or when the reader asks if the list is paused (messages.js).
      window.pubsubMessages.arrived(fresh.length, function () {
        fresh.forEach(function (html) { table.prepend(window.pubsubMessages.prepare($($.parseHTML(html.trim())))); });
        $("#no-items").prop("hidden", true);
      });
      if (reply.ids.length) { newestId = Math.max(newestId, reply.ids[reply.ids.length - 1]); }
      // A filter expression the database cannot answer is evaluated over a bounded scan: go on from
      // where it stopped, even when it found nothing.
      if (reply.scanned_to) { newestId = Math.max(newestId, Number(reply.scanned_to)); }
      setTimeout(poll, reply.more ? 0 : 5000);
    }).fail(function (xhr) {
      $("#poll-error").text("Updates paused (" + (xhr.status || "no answer") + "); retrying every 5 seconds.")
        .prop("hidden", false);
      setTimeout(poll, 5000);
    });
  }
  setTimeout(poll, 5000);
});
