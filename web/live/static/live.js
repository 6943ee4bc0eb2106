// iotauth live: sign in as an operator, exchange the access token for short-lived MQTT credentials and
// watch one agent's messages over MQTT/WebSockets (docs/live.md).
//
// Every secret (the access and refresh tokens, the MQTT password) lives only in the variables of this
// closure: never in localStorage, sessionStorage, a cookie, a URL or the page. A reload signs out.
// Sign-in and exchange (login, exchange) are apart from the MQTT session (connect), so that each can be
// driven on its own.
(function () {
  "use strict";

  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const MAX_MESSAGES = 200; // older messages are dropped from the list
  const MAX_SHOWN = 4096; // characters of a payload shown
  const RENEW_MARGIN_MS = 60 * 1000; // renew credentials (and the access token) this long before they end
  const MIN_DELAY_MS = 1000;
  const RETRY_MS = [2000, 5000, 10000, 30000, 60000];

  let config = null; // GET /live/config.json: { mqttWsUrl }
  let session = null; // { accessToken, refreshToken, accessExpiresAt } after a sign-in
  let live = null; // { client, creds, agent, topic, clientId } once a subscription is granted
  let watching = ""; // the agent being watched ("" for none)
  let timer = 0; // the pending renewal or retry
  let retries = 0;
  let epoch = 0; // bumped by every new watch and by sign-out: late callbacks of older ones do nothing

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
    if (!session) throw new Error("not signed in");
    if (session.accessExpiresAt - Date.now() > RENEW_MARGIN_MS) return session.accessToken;
    keepTokens(await postJSON("/api/v1/auth/refresh", { refreshToken: session.refreshToken }));
    return session.accessToken;
  }

  function parseTime(v) {
    if (typeof v === "number") return v < 1e12 ? v * 1000 : v;
    const t = Date.parse(v);
    return Number.isNaN(t) ? 0 : t;
  }

  // exchange trades the access token for short-lived MQTT credentials for this operator
  // (POST /api/v1/tokens/exchange with {"provider":"iotauth"}).
  async function exchange() {
    const token = await accessToken();
    const res = await postJSON("/api/v1/tokens/exchange", { provider: "iotauth" }, token);
    const m = res && res.mqtt;
    if (!m || typeof m.username !== "string" || typeof m.password !== "string") {
      throw new Error("the token exchange answered without MQTT credentials");
    }
    return {
      username: m.username,
      password: m.password,
      clientIdPrefix: typeof m.clientIdPrefix === "string" ? m.clientIdPrefix : "",
      expiresAt: parseTime(m.expiresAt),
      topics: Array.isArray(m.topics) ? m.topics : [],
    };
  }

  function randomSuffix() {
    const b = new Uint8Array(8);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  // connect opens an MQTT session over WebSockets with creds ({username, password, clientIdPrefix,
  // expiresAt}), subscribes to agents/<agent>/# and resolves once the broker granted the subscription.
  // Only then does the new session replace the one open so far, so a renewal loses no message and shows
  // none twice.
  function connect(creds, agent) {
    if (typeof mqtt === "undefined" || typeof mqtt.connect !== "function") {
      return Promise.reject(new Error("MQTT.js is missing from this build of iotauth: run make build (it runs npm ci) and restart"));
    }
    if (!config || !config.mqttWsUrl) return Promise.reject(new Error("the page has no broker URL (GET /live/config.json failed)"));
    if (!UUID.test(agent)) return Promise.reject(new Error("enter an agent's UUID (8-4-4-4-12 hexadecimal digits)"));
    const topic = "agents/" + agent.toLowerCase() + "/#";
    const clientId = (creds.clientIdPrefix || "") + randomSuffix();
    const mine = epoch;
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(config.mqttWsUrl, {
        clientId,
        username: creds.username,
        password: creds.password,
        protocolVersion: 4,
        clean: true,
        keepalive: 60,
        connectTimeout: 15000,
        reconnectPeriod: 0, // this page reconnects itself, with fresh credentials
        resubscribe: false,
        // MQTT.js's default timers run in a Worker made from a blob: URL, which the page's CSP forbids.
        timerVariant: "native",
      });
      let settled = false;
      const refuse = (err) => {
        if (settled) return;
        settled = true;
        client.end(true);
        reject(err);
      };
      client.on("connect", () => {
        client.subscribe(topic, { qos: 0 }, (err, granted) => {
          if (err) return refuse(err);
          if (!granted || granted.length !== 1 || granted[0].qos >= 128) {
            return refuse(new Error("the broker refused the subscription to " + topic));
          }
          if (mine !== epoch) return refuse(new Error("superseded"));
          settled = true;
          const old = live;
          live = { client, creds, agent, topic, clientId };
          if (old) old.client.end(true);
          resolve(live);
        });
      });
      client.on("message", (t, payload) => {
        if (live && live.client === client) addMessage(t, payload);
      });
      client.on("error", (err) => refuse(new Error("MQTT: " + (err && err.message ? err.message : err))));
      client.on("close", () => {
        if (!settled) return refuse(new Error("the broker closed the connection (refused credentials, or the broker is unreachable)"));
        if (live && live.client === client) lost();
      });
    });
  }

  function disconnect() {
    clearTimeout(timer);
    timer = 0;
    if (live) live.client.end(true);
    live = null;
  }

  // lost: the live session ended without being asked (the broker restarted, or closed it because the
  // credentials ended or were revoked). Try again with fresh credentials.
  function lost() {
    live = null;
    setStatus("Connection lost; reconnecting…", "error");
    retry();
  }

  function retry() {
    const delay = RETRY_MS[Math.min(retries, RETRY_MS.length - 1)];
    retries++;
    schedule(delay);
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(renew, Math.max(MIN_DELAY_MS, delay));
  }

  // scheduleRenewal re-exchanges before the credentials end: a minute before, or halfway through a
  // lifetime shorter than two minutes.
  function scheduleRenewal(creds) {
    const left = creds.expiresAt - Date.now();
    schedule(left > 2 * RENEW_MARGIN_MS ? left - RENEW_MARGIN_MS : left / 2);
  }

  async function renew() {
    timer = 0;
    if (!watching || !session) return;
    const mine = epoch;
    try {
      const creds = await exchange();
      if (mine !== epoch) return;
      await connect(creds, watching);
      if (mine !== epoch) return;
      retries = 0;
      liveStatus();
      scheduleRenewal(creds);
    } catch (err) {
      if (mine !== epoch) return;
      if (err instanceof APIError && err.status === 401) {
        signedOut("Your session has ended (" + err.message + "); sign in again.");
        return;
      }
      fail(err);
      retry();
    }
  }

  function liveStatus() {
    if (!live) return;
    const until = live.creds.expiresAt ? new Date(live.creds.expiresAt).toLocaleTimeString() : "?";
    setStatus("Live: " + live.topic, "live");
    $("topic").textContent = live.topic;
    $("session").textContent = "MQTT client id " + live.clientId + " · credentials valid until " + until + ", renewed before then";
  }

  // watch starts watching an agent: fresh credentials, a new session, renewals.
  async function watch(agent) {
    agent = agent.trim();
    if (!UUID.test(agent)) throw new Error("enter an agent's UUID (8-4-4-4-12 hexadecimal digits)");
    epoch++;
    disconnect();
    watching = agent;
    retries = 0;
    clearMessages();
    setStatus("Connecting…", "busy");
    const mine = epoch;
    const creds = await exchange();
    if (mine !== epoch) return;
    await connect(creds, agent);
    if (mine !== epoch) return;
    liveStatus();
    scheduleRenewal(creds);
  }

  function clearMessages() {
    $("messages").replaceChildren();
  }

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text; // never innerHTML: topics and payloads come from devices
    return s;
  }

  function payloadText(bytes) {
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      return { text: text.length > MAX_SHOWN ? text.slice(0, MAX_SHOWN) + "…" : text, binary: false };
    } catch (e) {
      const hex = Array.from(bytes.slice(0, MAX_SHOWN / 2), (x) => x.toString(16).padStart(2, "0")).join(" ");
      return { text: bytes.length + " bytes: " + hex + (bytes.length > MAX_SHOWN / 2 ? " …" : ""), binary: true };
    }
  }

  function addMessage(topic, payload) {
    const list = $("messages");
    const li = document.createElement("li");
    const p = payloadText(payload);
    li.append(span("time", new Date().toLocaleTimeString()), span("topic", topic), span(p.binary ? "payload binary" : "payload", p.text));
    list.prepend(li);
    while (list.children.length > MAX_MESSAGES) list.lastElementChild.remove();
  }

  function signedOut(message) {
    epoch++;
    disconnect();
    watching = "";
    session = null;
    clearMessages();
    $("topic").textContent = "";
    $("session").textContent = "";
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

  async function start() {
    try {
      const res = await fetch("/live/config.json", { cache: "no-store", credentials: "same-origin" });
      if (!res.ok) throw new Error("GET /live/config.json: " + res.status);
      config = await res.json();
    } catch (err) {
      fail(err);
      return;
    }
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
        await watch($("agent").value);
      } catch (err) {
        if (err instanceof APIError && err.status === 401) signedOut("Your session has ended; sign in again.");
        else fail(err);
      } finally {
        busy("watch-button", false);
      }
    });
    $("logout-button").addEventListener("click", logout);
    show("login");
    setStatus(typeof mqtt === "undefined" ? "MQTT.js is missing from this build of iotauth: run make build (it runs npm ci) and restart" : "Sign in to watch an agent.",
      typeof mqtt === "undefined" ? "error" : "idle");
    document.body.dataset.ready = "true";
  }

  // For the browser tests: drive the MQTT session with given credentials, apart from sign-in and
  // exchange. It holds no secret of the page's own.
  window.iotauthLive = Object.freeze({
    connect: async (creds, agent) => {
      epoch++;
      disconnect();
      watching = "";
      show("watch");
      clearMessages();
      const l = await connect(creds, agent);
      liveStatus();
      return l.clientId;
    },
  });

  start();
})();
