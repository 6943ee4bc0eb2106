// iotauth watch: the MQTT part of watching one agent live, shared by the /live page (live.js) and the
// console's Watch live (docs/live.md, docs/console.md). Whoever uses it hands it a function that returns
// fresh short-lived MQTT credentials; this file connects with them over MQTT/WebSockets, subscribes to
// the agent's topics, lists its messages, and renews the credentials before they end.
//
// The credentials live only in this closure's variables: never in localStorage, sessionStorage, a
// cookie, a URL or the page.
(function () {
  "use strict";

  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const MAX_MESSAGES = 200; // older messages are dropped from the list
  const MAX_SHOWN = 4096; // characters of a payload shown
  const RENEW_MARGIN_MS = 60 * 1000; // renew credentials this long before they end
  const MIN_DELAY_MS = 1000;
  const RETRY_MS = [2000, 5000, 10000, 30000, 60000];
  const MISSING = "MQTT.js is missing from this build of iotauth: run make build (it runs npm ci) and restart";

  // SignedOut is thrown by a credentials function when the operator's session has ended: the watcher
  // stops and calls onSignedOut instead of retrying.
  class SignedOut extends Error {}

  // clock formats times in one zone (an IANA name; UTC when none or unknown), with the zone written
  // after them, as the console shows every time.
  function clock(zone) {
    const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short" };
    try {
      return new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: zone || "UTC" }, opts));
    } catch (e) {
      return new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: "UTC" }, opts));
    }
  }

  function parseTime(v) {
    if (typeof v === "number") return v < 1e12 ? v * 1000 : v;
    const t = Date.parse(v);
    return Number.isNaN(t) ? 0 : t;
  }

  // credentialsOf checks an exchange's MQTT answer ({username, password, clientIdPrefix, expiresAt}).
  function credentialsOf(m) {
    if (!m || typeof m.username !== "string" || typeof m.password !== "string") {
      throw new Error("the token exchange answered without MQTT credentials");
    }
    return {
      username: m.username,
      password: m.password,
      clientIdPrefix: typeof m.clientIdPrefix === "string" ? m.clientIdPrefix : "",
      expiresAt: parseTime(m.expiresAt),
    };
  }

  function randomSuffix() {
    const b = new Uint8Array(8);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
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

  // create makes a watcher. opts:
  //   status, messages, session, topic: the elements it writes to (status gets data-state idle, busy,
  //     live or error; messages is a list);
  //   wsUrl: the broker's MQTT-over-WebSockets URL;
  //   credentials: async () => an exchange's MQTT answer, fresh each call (throw SignedOut to stop);
  //   onSignedOut(message): called when credentials threw SignedOut;
  //   zone: the IANA zone the times are shown in (UTC by default).
  function create(opts) {
    const el = { status: opts.status, messages: opts.messages, session: opts.session, topic: opts.topic };
    const fmt = clock(opts.zone);
    let live = null; // { client, creds, agent, topic, clientId } once a subscription is granted
    let watching = ""; // the agent being watched ("" for none)
    let timer = 0; // the pending renewal or retry
    let retries = 0;
    let epoch = 0; // bumped by every new watch and by stop: late callbacks of older ones do nothing

    function setStatus(text, state) {
      el.status.textContent = text;
      el.status.dataset.state = state || "idle";
    }

    function fail(err) {
      setStatus(err && err.message ? err.message : String(err), "error");
    }

    // connect opens an MQTT session over WebSockets with creds, subscribes to agents/<agent>/# and
    // resolves once the broker granted the subscription. Only then does the new session replace the one
    // open so far, so a renewal loses no message and shows none twice.
    function connect(creds, agent) {
      if (typeof mqtt === "undefined" || typeof mqtt.connect !== "function") return Promise.reject(new Error(MISSING));
      if (!opts.wsUrl) return Promise.reject(new Error("the page has no broker URL"));
      if (!UUID.test(agent)) return Promise.reject(new Error("enter an agent's UUID (8-4-4-4-12 hexadecimal digits)"));
      const topic = "agents/" + agent.toLowerCase() + "/#";
      const clientId = (creds.clientIdPrefix || "") + randomSuffix();
      const mine = epoch;
      return new Promise((resolve, reject) => {
        const client = mqtt.connect(opts.wsUrl, {
          clientId,
          username: creds.username,
          password: creds.password,
          protocolVersion: 4,
          clean: true,
          keepalive: 60,
          connectTimeout: 15000,
          reconnectPeriod: 0, // this file reconnects itself, with fresh credentials
          resubscribe: false,
          // MQTT.js's default timers run in a Worker made from a blob: URL, which the CSP forbids.
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

    // scheduleRenewal asks for new credentials before these end: a minute before, or halfway through a
    // lifetime shorter than two minutes.
    function scheduleRenewal(creds) {
      const left = creds.expiresAt - Date.now();
      schedule(left > 2 * RENEW_MARGIN_MS ? left - RENEW_MARGIN_MS : left / 2);
    }

    async function fresh() {
      return credentialsOf(await opts.credentials(watching));
    }

    function signedOut(err) {
      stop();
      if (opts.onSignedOut) opts.onSignedOut(err.message);
      else fail(err);
    }

    async function renew() {
      timer = 0;
      if (!watching) return;
      const mine = epoch;
      try {
        const creds = await fresh();
        if (mine !== epoch) return;
        await connect(creds, watching);
        if (mine !== epoch) return;
        retries = 0;
        liveStatus();
        scheduleRenewal(creds);
      } catch (err) {
        if (mine !== epoch) return;
        if (err instanceof SignedOut) return signedOut(err);
        fail(err);
        retry();
      }
    }

    function liveStatus() {
      if (!live) return;
      const until = live.creds.expiresAt ? fmt.format(new Date(live.creds.expiresAt)) : "?";
      setStatus("Live: " + live.topic, "live");
      if (el.topic) el.topic.textContent = live.topic;
      if (el.session) el.session.textContent = "MQTT client id " + live.clientId + " · credentials valid until " + until + ", renewed before then";
    }

    // watch starts watching an agent: fresh credentials, a new session, renewals. A SignedOut error
    // calls onSignedOut; other errors are thrown to the caller.
    async function watch(agent) {
      agent = String(agent).trim();
      if (!UUID.test(agent)) throw new Error("enter an agent's UUID (8-4-4-4-12 hexadecimal digits)");
      epoch++;
      disconnect();
      watching = agent;
      retries = 0;
      clearMessages();
      setStatus("Connecting…", "busy");
      const mine = epoch;
      try {
        const creds = await fresh();
        if (mine !== epoch) return;
        await connect(creds, agent);
        if (mine !== epoch) return;
        liveStatus();
        scheduleRenewal(creds);
      } catch (err) {
        if (mine !== epoch) return;
        watching = "";
        if (err instanceof SignedOut) return signedOut(err);
        throw err;
      }
    }

    // stop closes the session and forgets the credentials.
    function stop() {
      epoch++;
      disconnect();
      watching = "";
      if (el.topic) el.topic.textContent = "";
      if (el.session) el.session.textContent = "";
    }

    function clearMessages() {
      el.messages.replaceChildren();
    }

    function addMessage(topic, payload) {
      const list = el.messages;
      const li = document.createElement("li");
      const p = payloadText(payload);
      li.append(span("time", fmt.format(new Date())), span("topic", topic), span(p.binary ? "payload binary" : "payload", p.text));
      list.prepend(li);
      while (list.children.length > MAX_MESSAGES) list.lastElementChild.remove();
    }

    // connectWith drives the MQTT session with given credentials, apart from any exchange (the browser
    // tests use it).
    async function connectWith(creds, agent) {
      stop();
      clearMessages();
      const l = await connect(credentialsOf(creds), agent);
      liveStatus();
      return l.clientId;
    }

    return Object.freeze({ watch, stop, clearMessages, setStatus, fail, connectWith, watching: () => watching });
  }

  window.iotauthWatch = Object.freeze({ create, SignedOut, UUID, bundled: () => typeof mqtt !== "undefined", missing: MISSING });
})();
