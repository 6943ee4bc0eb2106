// iotauth live: sign in as an operator, exchange the access token for short-lived MQTT credentials and
// watch one agent's messages over MQTT/WebSockets (docs/live.md). The MQTT part (connect, subscribe,
// list, renew) is watch.js's, shared with the console's Watch live.
//
// Every secret (the access and refresh tokens, the MQTT password) lives only in the variables of this
// closure and of watch.js's: never in localStorage, sessionStorage, a cookie, a URL or the page. A
// reload signs out.
(function () {
  "use strict";

  const RENEW_MARGIN_MS = 60 * 1000; // refresh the access token this long before it ends
  const W = window.iotauthWatch;

  let config = null; // GET /live/config.json: { mqttWsUrl }
  let session = null; // { accessToken, refreshToken, accessExpiresAt } after a sign-in
  let watcher = null;

  const $ = (id) => document.getElementById(id);

  function setStatus(text, state) {
    const el = $("status");
    el.textContent = text;
    el.dataset.state = state || "idle";
  }

  function fail(err) {
    setStatus(err && err.message ? err.message : String(err), "error");
  }

  function show(section) {
    $("login-section").hidden = section !== "login";
    $("watch-section").hidden = section !== "watch";
  }

  // APIError is an answer of the REST API other than 2xx, with its problem+json code.
  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code || "";
    }
  }

  async function postJSON(path, body, bearer) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (bearer) headers.Authorization = "Bearer " + bearer;
    const res = await fetch(path, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      redirect: "error",
    });
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const why = (data && (data.detail || data.title)) || res.statusText || "request failed";
      throw new APIError(res.status, data && data.code, path + ": " + res.status + " " + why);
    }
    return data;
  }

  function keepTokens(pair) {
    if (!pair || typeof pair.accessToken !== "string" || typeof pair.refreshToken !== "string") {
      throw new Error("the sign-in answer holds no tokens");
    }
    const seconds = Number(pair.expiresIn) > 0 ? Number(pair.expiresIn) : 300;
    session = {
      accessToken: pair.accessToken,
      refreshToken: pair.refreshToken,
      accessExpiresAt: Date.now() + seconds * 1000,
    };
  }

  // login signs an operator in (POST /api/v1/auth/login) and keeps the tokens in memory.
  async function login(email, password) {
    keepTokens(await postJSON("/api/v1/auth/login", { email, password }));
  }

  // accessToken returns a usable access token, refreshing it first when it is about to end.
  async function accessToken() {
    if (!session) throw new W.SignedOut("Signed out.");
    if (session.accessExpiresAt - Date.now() > RENEW_MARGIN_MS) return session.accessToken;
    keepTokens(await postJSON("/api/v1/auth/refresh", { refreshToken: session.refreshToken }));
    return session.accessToken;
  }

  // exchange trades the access token for short-lived MQTT credentials for this operator, narrowed to
  // reading the watched agent (POST /api/v1/tokens/exchange with {"provider":"iotauth","topics":[…]}):
  // watch.js's credentials function.
  async function exchange(agent) {
    try {
      const token = await accessToken();
      const topics = [{ access: "read", pattern: "agents/" + String(agent).toLowerCase() + "/#" }];
      const res = await postJSON("/api/v1/tokens/exchange", { provider: "iotauth", topics: topics }, token);
      return res && res.mqtt;
    } catch (err) {
      if (err instanceof APIError && err.status === 401) {
        throw new W.SignedOut("Your session has ended (" + err.message + "); sign in again.");
      }
      throw err;
    }
  }

  function signedOut(message) {
    if (watcher) watcher.stop();
    session = null;
    if (watcher) watcher.clearMessages();
    show("login");
    setStatus(message || "Signed out.", message ? "error" : "idle");
  }

  async function logout() {
    const refreshToken = session && session.refreshToken;
    signedOut("");
    if (refreshToken) {
      try {
        await postJSON("/api/v1/auth/logout", { refreshToken });
      } catch (e) {
        // The tokens are forgotten here anyway; they end on their own.
      }
    }
  }

  function busy(button, on) {
    $(button).disabled = on;
  }

  // consoleSession: when this browser is signed in to the console, /live is the console's own live
  // screen, in its layout and without a second sign-in. The console's session cookie is HttpOnly and
  // scoped to /console/: this script never sees it, it only asks the console whether it is live.
  async function consoleSession() {
    try {
      const res = await fetch("/console/session", { cache: "no-store", credentials: "same-origin", redirect: "error" });
      if (!res.ok) return false;
      const s = await res.json();
      return !!(s && s.signedIn === true);
    } catch (e) {
      return false; // no console here: the page signs in itself
    }
  }

  async function start() {
    if (!W) {
      fail(new Error("watch.js did not load; reload the page"));
      return;
    }
    try {
      const res = await fetch("/live/config.json", { cache: "no-store", credentials: "same-origin" });
      if (!res.ok) throw new Error("GET /live/config.json: " + res.status);
      config = await res.json();
    } catch (err) {
      fail(err);
      return;
    }
    if (await consoleSession()) {
      location.replace("/console/live" + location.search);
      return;
    }
    watcher = W.create({
      status: $("status"),
      messages: $("messages"),
      session: $("session"),
      topic: $("topic"),
      wsUrl: config.mqttWsUrl,
      credentials: exchange,
      onSignedOut: signedOut,
      zone: "UTC",
    });
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const pw = $("password");
      busy("login-button", true);
      try {
        await login($("email").value, pw.value);
        pw.value = "";
        show("watch");
        setStatus("Signed in. Enter an agent's UUID.", "idle");
        $("agent").focus();
      } catch (err) {
        fail(err);
      } finally {
        busy("login-button", false);
      }
    });
    $("watch-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      busy("watch-button", true);
      try {
        await watcher.watch($("agent").value);
      } catch (err) {
        fail(err);
      } finally {
        busy("watch-button", false);
      }
    });
    $("logout-button").addEventListener("click", logout);
    show("login");
    setStatus(W.bundled() ? "Sign in to watch an agent." : W.missing, W.bundled() ? "idle" : "error");
    document.body.dataset.ready = "true";
  }

  // For the browser tests: drive the MQTT session with given credentials, apart from sign-in and
  // exchange. It holds no secret of the page's own.
  window.iotauthLive = Object.freeze({
    connect: async (creds, agent) => {
      show("watch");
      return watcher.connectWith(creds, agent);
    },
  });

  start();
})();
