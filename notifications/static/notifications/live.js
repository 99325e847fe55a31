// Live events for the logged-in user over /ws/notifications/ (notifications.consumers).
// The stored notifications are the truth; this only saves a page reload. No dependencies.
(function () {
  "use strict";
  var SESSION_ENDED = 4401; // the server closed the socket because the session ended: stay closed
  var MIN_DELAY = 1000;
  var MAX_DELAY = 30000;
  var delay = MIN_DELAY;

  function setUnread(count) {
    document.querySelectorAll("[data-unread-count]").forEach(function (badge) {
      badge.textContent = String(count);
      badge.hidden = !count;
    });
  }

  function showProgress(event) {
    document.querySelectorAll("[data-job-id]").forEach(function (element) {
      if (element.getAttribute("data-job-id") !== event.job) return;
      element.querySelectorAll("progress[data-job-progress]").forEach(function (bar) {
        bar.value = event.progress;
        bar.textContent = event.progress + "%";
      });
      element.querySelectorAll("[data-job-percent]").forEach(function (text) {
        text.textContent = event.progress + "%";
      });
      element.querySelectorAll("[data-job-state]").forEach(function (state) {
        state.textContent = event.state;
      });
      // A job's own page shows its result (a download link, or the bad rows) once it
      // ends: fetch the page and swap its content in, without a reload.
      var finished = event.state === "succeeded" || event.state === "failed";
      if (finished && element.hasAttribute("data-reload-when-finished")) refreshMain();
    });
  }

  function refreshMain() {
    fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (fresh && main) main.innerHTML = fresh.innerHTML;
      });
  }

  function showNotification(event) {
    setUnread(event.unread);
    var list = document.getElementById("notification-list") || document.getElementById("live-notifications");
    if (!list) return;
    var line = document.createElement("li");
    line.className = "unread";
    // Only paths on this site become links (the server sends nothing else).
    var title = document.createElement(/^\/(?!\/)/.test(event.link || "") ? "a" : "strong");
    if (title.tagName === "A") title.href = event.link;
    title.textContent = event.title;
    line.appendChild(title);
    if (event.body) line.appendChild(document.createTextNode(": " + event.body));
    list.insertBefore(line, list.firstChild);
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/notifications/");
    socket.onopen = function () {
      delay = MIN_DELAY;
    };
    socket.onmessage = function (message) {
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (event.type === "job.progress") showProgress(event);
      else if (event.type === "notification") showNotification(event);
      else if (event.type === "notification.read") setUnread(event.unread);
    };
    socket.onclose = function (close) {
      if (close.code === SESSION_ENDED) return;
      // 1001 and 1012 (a replica going away or restarting) and network drops: come back,
      // with jitter so a restarted herd is not hit by every browser at the same moment.
      window.setTimeout(connect, delay * (0.5 + Math.random()));
      delay = Math.min(delay * 2, MAX_DELAY);
    };
  }

  connect();
})();
