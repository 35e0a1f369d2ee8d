/* The live page: polling status, new messages every five seconds, infinite scroll. */
$(function () {
  "use strict";
  // Times come from the server in UTC; show them in the browser's local time (list and detail view).
  function showLocalTimes(scope) {
    $(scope).find("time.local-time").each(function () {
      const iso = $(this).attr("datetime");
      if (iso) {
        const when = new Date(iso);
        if (!isNaN(when)) { $(this).text(when.toLocaleString()).attr("title", iso); }
      }
    });
  }
  showLocalTimes(document);

  const page = $("#page");
  if (!page.length) { return; }
  const urls = {
    notifications: page.data("notifications-url"),
    useritems: page.data("useritems-url"),
    polling: page.data("polling-url"),
    changePassword: page.data("change-password-url")
  };
  const owner = String(page.data("owner"));
  const ownPage = page.data("own-page") === true;
  const subscription = String(page.data("subscription"));
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
    // Newer rows come oldest first; prepending each keeps the newest on top.
    for (let i = 0; i < rows.length; i++) {
      if (seenIds.has(ids[i])) { continue; }
      seenIds.add(ids[i]);
      const row = $($.parseHTML(rows[i].trim()));
      showLocalTimes(row);
      if (position === "top") { table.prepend(row); } else { table.append(row); }
    }
    if (seenIds.size) { $("#no-items").prop("hidden", true); }
    if (position === "top") { trimOldRows(); }
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

  function forThisSubscription(name) {
    // Notifications may name the subscription in full (projects/p/subscriptions/s) or by its short name.
    return name === undefined || name === null || name === subscription ||
      String(name).endsWith("/subscriptions/" + subscription);
  }

  function setTaskProgress(data) {
    const box = $("#current-task");
    const stage = String(data.progress || "");
    const ended = stage === "Finished" || stage.indexOf("Failed") === 0;
    $("#task-description").text(data.description || "Polling");
    $("#task-progress").text(ended ? stage : stage + "...");
    $("#task-count").text(data.stored_count !== undefined ? data.stored_count + " stored" : "");
    box.toggleClass("alert-success", stage.indexOf("Failed") !== 0)
       .toggleClass("alert-danger", stage.indexOf("Failed") === 0);
    if (!ended) {
      // Another tab may have started it: the button follows the task.
      if (forThisSubscription(data.subscription)) { setButton(true); }
      clearTimeout(setTaskProgress.timer);
      if (box.prop("hidden") || box.is(":hidden")) { box.prop("hidden", false).hide().fadeIn(1000); }
    } else {
      if (forThisSubscription(data.subscription)) { setButton(false); }
      clearTimeout(setTaskProgress.timer);
      setTaskProgress.timer = setTimeout(function () { box.fadeOut(1000); }, 5000);
    }
  }

  function connectionLost(xhr, textStatus) {
    let reason = xhr.status === 0 ? "the server did not answer" : (xhr.status + " " + xhr.statusText);
    // A signed-out session is redirected to the sign-in page, which is HTML, not JSON.
    if (xhr.status === 401 || textStatus === "parsererror") { reason = "you are signed out; reload to sign in"; }
    $("#poll-error").text("Updates paused: " + reason + ". Retrying every 5 seconds.").prop("hidden", false);
  }

  function connectionBack() { $("#poll-error").prop("hidden", true); }

  function pollNotifications() {
    if (!ownPage) { return $.Deferred().resolve(); }
    return $.getJSON(urls.notifications, {since: notificationsSince}).done(function (list) {
      for (let i = 0; i < list.length; i++) {
        if (list[i].name === "task_progress") { setTaskProgress(list[i].data); }
        notificationsSince = list[i].timestamp;
      }
      connectionBack();
    }).fail(connectionLost);
  }

  function pollItems() {
    return $.getJSON(urls.useritems, {after: newestId, user: owner}).fail(connectionLost).done(function (reply) {
      connectionBack();
      addRows(reply.items, reply.ids, "top");
      if (reply.ids.length) { newestId = Math.max(newestId, reply.ids[reply.ids.length - 1]); }
      if (!oldestId && reply.ids.length) { oldestId = reply.ids[0]; }
      // A burst is caught up a page at a time, without waiting for the next tick.
      if (reply.more) { setTimeout(pollItems, 200); }
    });
  }

  function loadOlder() {
    if (noOlderItems || loadingOlder) { return; }
    loadingOlder = true;
    $("#scroll-status").text("Loading older messages...");
    $.getJSON(urls.useritems, {before: oldestId, user: owner}).done(function (reply) {
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
        setButton(true);
        if (reply.status === "success") { setTaskProgress({progress: "Starting", description: "Polling " + subscription}); }
        infoMessage(reply.status === "success" ? "Started background task: polling " + subscription
                                               : "A polling task is already running.");
      } else {
        setButton(false);
        infoMessage(reply.status === "terminated" ? "Stopping background task: polling " + subscription
                                                  : "No polling task was running.");
      }
    }).fail(function (xhr) {
      const reply = xhr.responseJSON || {};
      infoMessage("Could not " + action + " polling: " + (reply.error || xhr.statusText));
    }).always(function () { button.prop("disabled", false); });
  });

  $("#changepwd").on("submit", function (event) {
    event.preventDefault();
    const form = $(this);
    const box = $("#pwd-alert");
    function report(ok, message) {
      box.text(message).prop("hidden", false)
        .toggleClass("alert-success", ok).toggleClass("alert-danger", !ok);
    }
    if ($("#newpass").val() !== $("#cnfrmpass").val()) {
      report(false, "The new passwords do not match.");
      return;
    }
    $.post(urls.changePassword, form.serialize()).done(function (reply) {
      report(true, reply.message || "Password changed.");
    }).fail(function (xhr) {
      report(false, (xhr.responseJSON && xhr.responseJSON.error) || "The password was not changed.");
    }).always(function () { form.trigger("reset"); });
  });

  function tick() {
    $.when(pollNotifications(), pollItems()).always(function () { setTimeout(tick, POLL_MS); });
  }
  pollNotifications();
  setTimeout(tick, POLL_MS);
});
