// Status page: the buttons call the /v1 API, and the page refreshes itself unless a person is
// busy with it. With an API key the server answers GET / with a sign-in form; the key typed
// there is kept in this tab's sessionStorage and sent as `Authorization: Bearer` to load the
// page and with every button. No inline script: the Content-Security-Policy forbids it.
(function () {
  "use strict";
  var KEY = "ingestion-api-key";
  var FLASH = "ingestion-flash";
  var busy = false;
  var nextReload = 0;

  function data() { return document.body.dataset; }
  function keyRequired() { return data().keyRequired === "true"; }
  function locked() { return data().locked === "true"; }
  function refreshSeconds() { return parseInt(data().refresh || "15", 10); }
  function key() { return sessionStorage.getItem(KEY) || ""; }
  function authHeaders() { return key() ? { Authorization: "Bearer " + key() } : {}; }
  function later(seconds) { nextReload = Date.now() + seconds * 1000; }

  function say(message, isError, restored) {
    var box = document.getElementById("flash");
    if (!box) { return; }
    box.textContent = "";
    var p = document.createElement("p");
    p.textContent = message;
    if (isError) { p.className = "error"; }
    box.appendChild(p);
    if (!restored) {
      sessionStorage.setItem(FLASH, JSON.stringify({ message: message, error: !!isError, at: Date.now() }));
    }
  }

  function restoreFlash() {
    var saved = sessionStorage.getItem(FLASH);
    if (!saved) { return; }
    try {
      var flash = JSON.parse(saved);
      if (Date.now() - flash.at < 60000) { say(flash.message, flash.error, true); }
    } catch (e) { sessionStorage.removeItem(FLASH); }
  }

  // Fetch the page with the key and put it in place of this one (no navigation: a browser
  // cannot send Authorization on a plain page load).
  async function load() {
    var response = await fetch(window.location.pathname + window.location.search, {
      headers: authHeaders(), cache: "no-store", credentials: "omit"
    });
    var html = await response.text();
    var fresh = new DOMParser().parseFromString(html, "text/html");
    if (response.status === 401 && key()) {
      sessionStorage.removeItem(KEY);
      document.title = fresh.title;
      document.body.replaceWith(document.adoptNode(fresh.body));
      say("The API key was refused; enter it again.", true);
      return;
    }
    document.title = fresh.title;
    document.body.replaceWith(document.adoptNode(fresh.body));
    restoreFlash();
  }

  function reload() {
    if (keyRequired()) {
      load().catch(function (e) { say("The service did not answer: " + e, true, true); });
    } else {
      window.location.reload();
    }
  }

  async function post(url, payload) {
    var headers = authHeaders();
    headers["Content-Type"] = "application/json";
    var response = await fetch(url, {
      method: "POST", headers: headers, body: JSON.stringify(payload), credentials: "omit"
    });
    var answer = {};
    try { answer = await response.json(); } catch (e) { answer = {}; }
    return { status: response.status, data: answer };
  }

  async function act(button) {
    if (button.dataset.action === "sign-out") {
      sessionStorage.removeItem(KEY);
      sessionStorage.removeItem(FLASH);
      window.location.reload();
      return;
    }
    busy = true;
    button.disabled = true;
    try {
      var result;
      if (button.dataset.action === "sync") {
        result = await post("/v1/sync", { provider: button.dataset.provider, userId: button.dataset.user });
        if (result.status === 202) {
          say((result.data.coalesced ? "Already queued: " : "Queued: ") + button.dataset.provider +
              " for " + button.dataset.user + " (job " + result.data.jobId + ")", false);
        }
      } else {
        result = await post("/v1/dlq/retry", {});
        if (result.status === 200) { say("Put " + result.data.retried + " dead letter(s) back on the queue.", false); }
      }
      if (result.status === 401) {
        sessionStorage.removeItem(KEY);
        say("The API key was refused; enter it again.", true);
      } else if (result.status >= 300) {
        say("Failed (" + result.status + "): " + (result.data.error || "no details"), true);
      }
    } catch (e) {
      say("The service did not answer: " + e, true);
    } finally {
      button.disabled = false;
      busy = false;
      later(3);
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (button) { act(button); }
  });

  document.addEventListener("submit", function (event) {
    if (event.target.id !== "key-form") { return; }
    event.preventDefault();
    var input = document.getElementById("api-key");
    if (!input.value) { return; }
    sessionStorage.setItem(KEY, input.value);
    input.value = "";
    var state = document.getElementById("key-state");
    if (state) { state.textContent = "signing in…"; }
    load().catch(function (e) { say("The service did not answer: " + e, true); });
  });

  if (locked() && key()) {
    load().catch(function (e) { say("The service did not answer: " + e, true); });
  } else {
    restoreFlash();
  }
  later(refreshSeconds());

  setInterval(function () {
    if (locked()) { return; }
    var typing = document.activeElement && document.activeElement.tagName === "INPUT";
    if (busy || typing) { nextReload = Math.max(nextReload, Date.now() + 5000); return; }
    if (Date.now() >= nextReload) { later(refreshSeconds()); reload(); }
  }, 1000);
})();
