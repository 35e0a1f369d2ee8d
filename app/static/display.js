/* Colour mode and time zone, on every page. Loaded in <head> (not inline: the CSP forbids that),
   so the colour mode is set before the page is drawn and a dark page never flashes white. */
(function () {
  "use strict";
  const root = document.documentElement;
  const THEME_KEY = "pubsub-monitor.theme";
  const ZONE_KEY = "pubsub-monitor.time-zone";
  const darkQuery = window.matchMedia("(prefers-color-scheme: dark)");
  // Times younger than this read as "5 min ago", with the absolute time on hover.
  const RELATIVE_MS = 60 * 60 * 1000;

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (error) { return null; }
  }
  function store(key, value) {
    try {
      if (value === null) { window.localStorage.removeItem(key); } else { window.localStorage.setItem(key, value); }
    } catch (error) { /* storage refused (private mode): the choice lasts for this page only */ }
  }

  // --- colour mode: the stored choice, else the system's (prefers-color-scheme) ---------------
  function theme() {
    const choice = stored(THEME_KEY);
    if (choice === "light" || choice === "dark") { return choice; }
    return darkQuery.matches ? "dark" : "light";
  }
  function applyTheme() {
    root.setAttribute("data-bs-theme", theme());
    const toggle = document.getElementById("theme-switch");
    if (toggle) { toggle.checked = theme() === "dark"; }
  }
  applyTheme();
  darkQuery.addEventListener("change", applyTheme);

  // --- times: ISO 8601 with a Z from the server, shown in local time or UTC ---------------------
  function useUtc() { return stored(ZONE_KEY) === "utc"; }
  function zoneName() {
    if (useUtc()) { return "UTC"; }
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  }
  function pad(number, width) { return String(number).padStart(width || 2, "0"); }
  function absolute(when) {
    const utc = useUtc();
    const parts = utc
      ? [when.getUTCFullYear(), when.getUTCMonth() + 1, when.getUTCDate(), when.getUTCHours(), when.getUTCMinutes(), when.getUTCSeconds()]
      : [when.getFullYear(), when.getMonth() + 1, when.getDate(), when.getHours(), when.getMinutes(), when.getSeconds()];
    return parts[0] + "-" + pad(parts[1]) + "-" + pad(parts[2]) + " " + pad(parts[3]) + ":" + pad(parts[4]) + ":" + pad(parts[5]);
  }
  function relative(when, now) {
    const seconds = Math.round((now - when) / 1000);
    if (seconds < 10) { return "just now"; }
    if (seconds < 60) { return seconds + " s ago"; }
    return Math.floor(seconds / 60) + " min ago";
  }
  function formatTimes(scope) {
    const now = Date.now();
    const zone = zoneName();
    (scope || document).querySelectorAll("time[datetime]").forEach(function (element) {
      const iso = element.getAttribute("datetime");
      const when = new Date(iso);
      if (!iso || isNaN(when)) { return; }
      const shown = absolute(when);
      const age = now - when;
      const recent = element.classList.contains("relative") && age >= -60000 && age < RELATIVE_MS;
      element.textContent = recent ? relative(when, now) : shown;
      element.title = shown + " " + zone + (zone === "UTC" ? "" : " · " + iso);
      element.dataset.absolute = shown;
    });
    document.querySelectorAll(".zone-name").forEach(function (label) { label.textContent = zone; });
    document.querySelectorAll("input.zone-input").forEach(function (input) { input.value = zone === "local" ? "" : zone; });
  }

  // A page drawn by the server in one zone (the Activity charts: data-rendered-zone) is asked for
  // again in the zone shown; the URL's tz says which one was asked for, so this never loops.
  function followZone() {
    const drawn = document.querySelector("[data-rendered-zone]");
    if (!drawn) { return; }
    const shown = zoneName();
    const wanted = ["local", "UTC", "Etc/UTC", "GMT", "Etc/GMT"].includes(shown) ? "UTC" : shown;
    const url = new URL(window.location.href);
    if (drawn.getAttribute("data-rendered-zone") === wanted || url.searchParams.get("tz") === wanted) { return; }
    url.searchParams.set("tz", wanted);
    window.location.replace(url.toString());
  }

  window.pubsubDisplay = {formatTimes: formatTimes, zoneName: zoneName};

  document.addEventListener("DOMContentLoaded", function () {
    const themeSwitch = document.getElementById("theme-switch");
    if (themeSwitch) {
      themeSwitch.checked = theme() === "dark";
      themeSwitch.addEventListener("change", function () {
        const wanted = themeSwitch.checked ? "dark" : "light";
        // Choosing what the system prefers forgets the choice, so the page follows the system again.
        store(THEME_KEY, wanted === (darkQuery.matches ? "dark" : "light") ? null : wanted);
        applyTheme();
      });
    }
    const zoneSwitch = document.getElementById("utc-switch");
    if (zoneSwitch) {
      zoneSwitch.checked = useUtc();
      zoneSwitch.addEventListener("change", function () {
        store(ZONE_KEY, zoneSwitch.checked ? "utc" : null);
        formatTimes(document);
        followZone();
      });
    }
    formatTimes(document);
    followZone();
    // "2 min ago" keeps counting.
    window.setInterval(function () { formatTimes(document); }, 30000);
  });
}());
