// Status page: the buttons call the /v1 API (with the key kept in this tab's sessionStorage
// when the server needs one), and the page reloads itself unless a person is busy with it.
(function () {
  "use strict";
  var KEY = "ingestion-api-key";
  var FLASH = "ingestion-flash";
  var body = document.body;
  var keyRequired = body.dataset.keyRequired === "true";
  var refreshSeconds = parseInt(body.dataset.refresh || "15", 10);
  var busy = false;
  var nextReload = Date.now() + refreshSeconds * 1000;

  function key() { return sessionStorage.getItem(KEY) || ""; }

  function say(message, isError, restored) {
    var box = document.getElementById("flash");
    box.textContent = "";
    var p = document.createElement("p");
    p.textContent = message;
    if (isError) { p.className = "error"; }
    box.appendChild(p);
    if (!restored) {
      sessionStorage.setItem(FLASH, JSON.stringify({ message: message, error: !!isError, at: Date.now() }));
    }
  }

  function showKeyState() {
    var state = document.getElementById("key-state");
    if (state) { state.textContent = key() ? "key set for this tab" : "no key yet"; }
  }

  async function post(url, payload) {
    var headers = { "Content-Type": "application/json" };
    if (key()) { headers.Authorization = "Bearer " + key(); }
    var response = await fetch(url, { method: "POST", headers: headers, body: JSON.stringify(payload) });
    var data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    return { status: response.status, data: data };
  }

  async function act(button) {
    if (keyRequired && !key()) {
      say("Enter the API key first: the buttons need it.", true);
      var input = document.getElementById("api-key");
      if (input) { input.focus(); }
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
        showKeyState();
        say("The API key was refused; enter it again.", true);
      } else if (result.status >= 300) {
        say("Failed (" + result.status + "): " + (result.data.error || "no details"), true);
      }
    } catch (e) {
      say("The service did not answer: " + e, true);
    } finally {
      button.disabled = false;
      busy = false;
      nextReload = Date.now() + 3000;
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (button) { act(button); }
  });

  var form = document.getElementById("key-form");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var input = document.getElementById("api-key");
      if (input.value) { sessionStorage.setItem(KEY, input.value); input.value = ""; }
      showKeyState();
      nextReload = Date.now() + refreshSeconds * 1000;
    });
  }
  showKeyState();

  var saved = sessionStorage.getItem(FLASH);
  if (saved) {
    try {
      var flash = JSON.parse(saved);
      if (Date.now() - flash.at < 60000) { say(flash.message, flash.error, true); }
    } catch (e) { sessionStorage.removeItem(FLASH); }
  }

  setInterval(function () {
    var typing = document.activeElement && document.activeElement.tagName === "INPUT";
    if (busy || typing) { nextReload = Math.max(nextReload, Date.now() + 5000); return; }
    if (Date.now() >= nextReload) { window.location.reload(); }
  }, 1000);
})();
