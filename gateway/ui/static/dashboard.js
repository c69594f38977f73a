// Live updates: every 2 s the page's live region (#live) is replaced by the server's fresh rendering
// of it (data-live names the URL; the server escapes everything it renders). A lost session goes to
// the login page.
(function () {
  "use strict";
  var region = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!region || !region.dataset.live) {
    return;
  }
  var url = region.dataset.live;
  var busy = false;

  function say(text, failed) {
    if (status) {
      status.textContent = text;
      status.classList.toggle("failed", failed);
    }
  }

  async function refresh() {
    if (busy) {
      return;
    }
    busy = true;
    try {
      var response = await fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
      });
      if (response.status === 401) {
        window.location.assign("/ui/login");
        return;
      }
      if (!response.ok) {
        say("update failed (HTTP " + response.status + ")", true);
        return;
      }
      region.innerHTML = await response.text();
      say("live · " + new Date().toLocaleTimeString(), false);
    } catch (error) {
      say("gateway unreachable", true);
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, 2000);
})();
