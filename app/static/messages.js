/* A message list (Live and Search): rows that expand in place, "expand all", and Pause, which holds
   new rows back behind a "12 new — show" badge while the polling goes on. The tab's title carries
   the count of messages that arrived while the tab was hidden. */
window.pubsubMessages = (function ($) {
  "use strict";
  const pending = [];
  let pendingCount = 0;
  let hiddenCount = 0;
  const baseTitle = document.title;

  function setExpanded(row, expanded) {
    row.toggleClass("expanded", expanded);
    row.find(".item-body").prop("hidden", !expanded);
    row.find(".item-toggle").attr("aria-expanded", expanded ? "true" : "false");
  }

  function expandAll() { return $("#expand-all").prop("checked") === true; }
  function paused() { return $("#pause-switch").prop("checked") === true; }

  // A row from the server, made ready to show: times in the chosen zone, expanded if all are.
  function prepare(row) {
    window.pubsubDisplay.formatTimes(row[0]);
    if (expandAll()) { setExpanded(row, true); }
    return row;
  }

  function showBadge() {
    $("#new-count").text(pendingCount);
    $("#new-messages").prop("hidden", pendingCount === 0);
  }

  function showTitle() {
    document.title = hiddenCount ? "(" + hiddenCount + ") " + baseTitle : baseTitle;
  }

  // `count` new rows arrived; `show` puts them in the list, now or when the reader asks.
  function arrived(count, show) {
    if (!count) { return; }
    if (document.hidden) { hiddenCount += count; showTitle(); }
    if (paused()) {
      pending.push(show);
      pendingCount += count;
      showBadge();
    } else {
      show();
    }
  }

  function showPending() {
    const waiting = pending.splice(0, pending.length);
    pendingCount = 0;
    showBadge();
    waiting.forEach(function (show) { show(); });
  }

  $(function () {
    const list = $("#useritems");
    list.on("click", ".item-summary", function (event) {
      // The message id is a link to the detail page; selecting text is not a click to toggle.
      if ($(event.target).closest("a").length || String(window.getSelection() || "")) { return; }
      const row = $(this).closest("tr.useritem");
      setExpanded(row, !row.hasClass("expanded"));
    });
    list.on("click", ".show-lines", function () {
      $(this).closest(".item-data").removeClass("clamped");
      $(this).remove();
    });
    $("#expand-all").on("change", function () {
      const expanded = expandAll();
      list.find("tr.useritem").each(function () { setExpanded($(this), expanded); });
    });
    $("#pause-switch").on("change", function () { if (!paused()) { showPending(); } });
    $("#new-messages").on("click", showPending);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { hiddenCount = 0; showTitle(); }
    });
  });

  return {prepare: prepare, arrived: arrived};
}(jQuery));
