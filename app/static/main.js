/* The live page: polling status, new messages every five seconds, infinite scroll
   (rows, expansion and Pause: messages.js; times and colour mode: display.js). */
$(function () {
  "use strict";
  const page = $("#page");
  if (!page.length) { return; }
  const urls = {
    notifications: page.data("notifications-url"),
    useritems: page.data("useritems-url"),
    polling: page.data("polling-url")
  };
  const owner = String(page.data("owner"));
  const ownPage = page.data("own-page") === true;
  const subscription = String(page.data("subscription"));
  const subscriptionLabel = $("#subscription-select option:selected").text().trim() || subscription;
  const hasStatus = $("#current-task").length > 0;
  const POLL_MS = 5000;
  let newestId = Number(page.data("newest-id")) || 0;
  let oldestId = Number(page.data("oldest-id")) || 0;
  // The page was rendered with the task's state; follow notifications from then on.
  let notificationsSince = Number(page.data("notifications-since")) || 0;
  let noOlderItems = oldestId === 0 || page.data("more-older") === false;
  let loadingOlder = false;
  const seenIds = new Set();
  $("#useritems tr.useritem").each(function () { seenIds.add(Number($(this).data("item-id"))); });

  $.ajaxSetup({
    headers: {"X-CSRFToken": $('meta[name="csrf-token"]').attr("content")}
  });

  function addRows(rows, ids, position) {
    const table = $("#useritems");
    const fresh = [];
    for (let i = 0; i < rows.length; i++) {
      if (seenIds.has(ids[i])) { continue; }
      seenIds.add(ids[i]);
      fresh.push(rows[i]);
    }
    function show() {
      // Newer rows come oldest first; prepending each keeps the newest on top.
      fresh.forEach(function (html) {
        const row = window.pubsubMessages.prepare($($.parseHTML(html.trim())));
        if (position === "top") { table.prepend(row); } else { table.append(row); }
      });
      if (table.children("tr.useritem").length) { $("#no-items").prop("hidden", true); }
      if (position === "top") { trimOldRows(); }
    }
    // New messages wait while the list is paused; older ones are what the reader scrolled for.
    if (position === "top") { window.pubsubMessages.arrived(fresh.length, show); } else { show(); }
  }

  // A tab left open on a busy subscription must not grow without bound: while the reader is at
  // the top, rows beyond MAX_ROWS are dropped from the bottom; scrolling down fetches them again.
  const MAX_ROWS = 500;
  function trimOldRows() {
    const rows = $("#useritems tr.useritem");
    if (rows.length <= MAX_ROWS || $(window).scrollTop() > 200) { return; }
    rows.slice(MAX_ROWS).each(function () {
      seenIds.delete(Number($(this).data("item-id")));
    }).remove();
    oldestId = Number($("#useritems tr.useritem").last().data("item-id"));
    noOlderItems = false;
  }

  function infoMessage(message) {
    const alert = $("#clnt-alert");
    alert.text(message).prop("hidden", false).hide().fadeIn(500);
    clearTimeout(infoMessage.timer);
    infoMessage.timer = setTimeout(function () { alert.fadeOut(1000); }, 7000);
  }

  function setButton(polling) {
    $("#pollnav").data("polling", polling)
      .text(polling ? "Stop polling" : "Start polling")
      .toggleClass("btn-warning", polling).toggleClass("btn-success", !polling);
  }

  // The status box shows GET /polling_pubsub's answer for this page's subscription, and nothing
  // else: it switches on the status and state values the server sends, never on their words.
  const BOX_CLASSES = "alert-success alert-danger alert-warning alert-secondary";
  function renderStatus(status) {
    const box = $("#current-task");
    let boxClass = "alert-secondary";
    let running = false;
    let visible = true;
    switch (status.status) {
      case "queued": running = true; break;
      case "polling": running = true; boxClass = "alert-success"; break;
      case "stalled": running = true; boxClass = "alert-warning"; break;
      case "failed": boxClass = "alert-danger"; break;
      default: visible = status.state === "stopping";
    }
    box.removeClass(BOX_CLASSES).addClass(boxClass).attr("data-status", status.status)
       .attr("data-state", status.state || "");
    $("#task-description").text(status.description || "");
    $("#task-progress").text(status.words || "");
    let count = "";
    if (status.task_id) {
      count = status.stored_count + " stored";
      if (status.quarantined_count) { count += " · " + status.quarantined_count + " quarantined"; }
    }
    $("#task-count").text(count);
    $("#dismiss-failure").prop("hidden", status.status !== "failed");
    box.prop("hidden", !visible);
    setButton(running);
  }

  // Two reads may be under way at once (new rows and a notification in one tick): only the answer
  // to the latest is shown, so an older answer arriving last cannot put back an older count.
  let statusReads = 0;
  function refreshStatus() {
    if (!ownPage || !hasStatus) { return $.Deferred().resolve(); }
    const read = ++statusReads;
    return $.getJSON(urls.polling, {subscription: subscription}).done(function (status) {
      if (read === statusReads) { renderStatus(status); }
    });
  }

  function connectionLost(xhr, textStatus) {
    let reason = xhr.status === 0 ? "the server did not answer" : (xhr.status + " " + xhr.statusText);
    // A signed-out session is redirected to the sign-in page, which is HTML, not JSON.
    if (xhr.status === 401 || textStatus === "parsererror") { reason = "you are signed out; reload to sign in"; }
    $("#poll-error").text("Updates paused: " + reason + ". Retrying every 5 seconds.").prop("hidden", false);
  }

  function connectionBack() { $("#poll-error").prop("hidden", true); }

  // Firings of the user's alert rules (app.alerts.evaluate posts one notification per rule and batch).
  const firingCounts = new Map();
  function showFiring(data) {
    const box = $("#alert-firings");
    const key = String(data.rule_id);
    const previous = firingCounts.get(key) || {name: data.rule, count: 0};
    firingCounts.set(key, {name: data.rule, count: previous.count + (Number(data.count) || 0)});
    const text = $("#alert-firings-text").empty();
    firingCounts.forEach(function (entry, ruleId) {
      if (text.children().length) { text.append(", "); }
      $("<a>").attr("href", box.data("alerts-url") + "/" + ruleId).text(entry.name + " (" + entry.count + ")").appendTo(text);
    });
    box.prop("hidden", false);
  }

  function pollNotifications() {
    if (!ownPage) { return $.Deferred().resolve(); }
    return $.getJSON(urls.notifications, {since: notificationsSince}).done(function (list) {
      let changed = false;
      for (let i = 0; i < list.length; i++) {
        const data = list[i].data || {};
        if (list[i].name === "task_progress" && data.subscription === subscription && data.state) { changed = true; }
        if (list[i].name === "alert_fired") { showFiring(data); }
        notificationsSince = list[i].timestamp;
      }
      connectionBack();
      // A task of this subscription changed; a waiting task changes place in the queue without notice.
      const state = $("#current-task").attr("data-status");
      if (changed || state === "queued" || state === "stalled" || $("#current-task").attr("data-state") === "stopping") {
        refreshStatus();
      }
    }).fail(connectionLost);
  }

  function pollItems() {
    return $.getJSON(urls.useritems, {after: newestId, user: owner, subscription: subscription}).fail(connectionLost).done(function (reply) {
      connectionBack();
      addRows(reply.items, reply.ids, "top");
      if (reply.ids.length) { newestId = Math.max(newestId, reply.ids[reply.ids.length - 1]); }
      if (!oldestId && reply.ids.length) { oldestId = reply.ids[0]; }
      // A burst is caught up a page at a time, without waiting for the next tick.
      if (reply.more) { setTimeout(pollItems, 200); }
      // New rows: the status box's count is read again now, not at the job's next progress
      // notification (up to 5 s later, then up to 5 s to the page's next tick), so that the box
      // never says "0 stored" above the rows it stored. The worker commits a row and the count together.
      else if (reply.ids.length) { refreshStatus(); }
    });
  }

  function loadOlder() {
    if (noOlderItems || loadingOlder) { return; }
    loadingOlder = true;
    $("#scroll-status").text("Loading older messages...");
    $.getJSON(urls.useritems, {before: oldestId, user: owner, subscription: subscription}).done(function (reply) {
      addRows(reply.items, reply.ids, "bottom");
      if (reply.ids.length) { oldestId = reply.ids[reply.ids.length - 1]; }
      noOlderItems = !reply.more;
      $("#scroll-status").text(noOlderItems ? "No older messages." : "");
    }).fail(function () {
      $("#scroll-status").text("Could not load older messages; scroll to try again.");
    }).always(function () {
      loadingOlder = false;
      if (!noOlderItems && nearBottom()) { loadOlder(); }
    });
  }

  function nearBottom() {
    return $(window).scrollTop() + $(window).height() >= $(document).height() - 300;
  }
  $(window).on("scroll resize", function () { if (nearBottom()) { loadOlder(); } });
  if (nearBottom()) { loadOlder(); }

  $("#pollnav").on("click", function (event) {
    event.preventDefault();
    const button = $(this).prop("disabled", true);
    const action = button.data("polling") === true ? "stop" : "start";
    $.post(urls.polling, {action: action, subscription: subscription}).done(function (reply) {
      if (action === "start") {
        infoMessage(reply.status === "success" ? "Started polling " + subscriptionLabel
                                               : "Polling of " + subscriptionLabel + " was already running.");
      } else {
        infoMessage(reply.status === "terminated" ? "Stopping polling of " + subscriptionLabel
                                                  : subscriptionLabel + " was not being polled.");
      }
    }).fail(function (xhr) {
      const reply = xhr.responseJSON || {};
      infoMessage("Could not " + action + " polling: " + (reply.error || xhr.statusText));
    }).always(function () {
      button.prop("disabled", false);
      refreshStatus();
    });
  });

  $("#dismiss-failure").on("click", function () {
    $.post(urls.polling, {action: "dismiss", subscription: subscription}).always(refreshStatus);
  });

  // Picking another subscription loads its page, so the URL (and a reload or shared link) keeps it.
  $("#subscription-select").on("change", function () { $("#subscription-picker").trigger("submit"); });

  function tick() {
    $.when(pollNotifications(), pollItems()).always(function () { setTimeout(tick, POLL_MS); });
  }
  pollNotifications();
  refreshStatus();
  setTimeout(tick, POLL_MS);
});
