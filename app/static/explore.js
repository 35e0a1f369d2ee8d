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
      for (let i = 0; i < reply.items.length; i++) {
        if (seenIds.has(reply.ids[i])) { continue; }
        seenIds.add(reply.ids[i]);
        table.prepend($($.parseHTML(reply.items[i].trim())));
      }
      if (reply.ids.length) {
        newestId = Math.max(newestId, reply.ids[reply.ids.length - 1]);
        $("#no-items").prop("hidden", true);
      }
      setTimeout(poll, reply.more ? 0 : 5000);
    }).fail(function (xhr) {
      $("#poll-error").text("Updates paused (" + (xhr.status || "no answer") + "); retrying every 5 seconds.")
        .prop("hidden", false);
      setTimeout(poll, 5000);
    });
  }
  setTimeout(poll, 5000);
});
