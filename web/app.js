// cloud-ia chat page: one WebSocket, the backend's JSON frames, and nothing lost across reconnects.
// Protocol: docs in ARCHITECTURE.md ("Client <-> backend protocol"). No build step.
"use strict";

(() => {
  // Each interval can be overridden from the page's query string (?ping_ms=...), for tests and demos.
  const query = new URLSearchParams(location.search);
  const setting = (name, fallback) => Number(query.get(name)) || fallback;
  const PING_INTERVAL_MS = setting("ping_ms", 30000);   // heartbeat; API Gateway drops a connection idle 10 min
  const PONG_TIMEOUT_MS = setting("pong_timeout_ms", 10000); // no pong within this: dead, reconnect
  const BACKOFF_BASE_MS = setting("backoff_ms", 500);   // reconnect delays: 0.5 s, 1 s, 2 s ... capped, full jitter
  const BACKOFF_CAP_MS = setting("backoff_cap_ms", 30000);
  const HISTORY_MARGIN_MS = 30000;     // ask a little further back than the last event (clock skew)
  const CIRCUIT_OPEN = "circuit_open";
  // The backend no longer knows this connection (its registration expired, Redis restarted ...):
  // a new connection registers again, and messages still waiting for a reply are sent again.
  const SESSION_LOST = ["unauthenticated", "token_expired", "token_invalid", "token_missing"];

  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const statusBox = $("status");
  const statusText = $("status-text");
  const userInput = $("user");
  const messageInput = $("message");
  const notice = $("notice");

  const store = {
    get: (k) => localStorage.getItem("cloudia." + k),
    set: (k, v) => localStorage.setItem("cloudia." + k, v),
  };
  const uuid = () => (crypto.randomUUID ? crypto.randomUUID()
    : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) =>
      (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16)));

  let user = store.get("user") || "guest-" + uuid().slice(0, 6);
  let conversationId = store.get("conversationId") || uuid();
  let lastSeenMs = Number(store.get("lastSeenMs." + conversationId) || 0);
  store.set("user", user);
  store.set("conversationId", conversationId);
  userInput.value = user;

  // One turn per message the person sent, found by clientMessageId or, once queued, by jobId.
  const turnsByClientId = new Map();
  const turnsByJobId = new Map();
  const earlyEvents = new Map();   // jobId -> events that arrived before their `queued`
  const outbox = [];               // turns written while offline, sent on the next connection

  let ws = null;
  let attempt = 0;
  let reconnectTimer = null;
  let pingTimer = null;
  let pongTimer = null;
  let everConnected = false;

  // ---------- rendering ----------
  const STATE_LABEL = {
    sending: "sending", waiting: "waiting for connection", queued: "queued",
    streaming: "streaming", answered: "answered", failed: "failed", held: "on hold",
  };

  function newTurn(clientMessageId, text) {
    $("empty")?.remove();
    const node = $("turn").content.firstElementChild.cloneNode(true);
    node.dataset.clientId = clientMessageId;
    node.querySelector(".bubble.user .text").textContent = text;
    const turn = { node, clientMessageId, jobId: null, state: null, answer: "", frame: null };
    turnsByClientId.set(clientMessageId, turn);
    log.appendChild(node);
    return turn;
  }

  function setState(turn, state, detail = "") {
    turn.state = state;
    turn.node.dataset.state = state;
    turn.node.querySelector(".state").textContent = STATE_LABEL[state] || state;
    turn.node.querySelector(".detail").textContent = detail;
    turn.node.querySelector(".detail").title = detail;
  }

  function showAnswer(turn, text) {
    const bubble = turn.node.querySelector(".bubble.assistant");
    bubble.hidden = false;
    bubble.querySelector(".text").textContent = text;
    scrollDown();
  }

  function scrollDown() { window.scrollTo({ top: document.body.scrollHeight }); }

  function setStatus(status, text) {
    statusBox.dataset.status = status;
    statusText.textContent = text;
  }

  let noticeTimer = null;
  function say(text) {
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
  }

  function seen(atMs) {
    if (atMs > lastSeenMs) {
      lastSeenMs = atMs;
      store.set("lastSeenMs." + conversationId, String(lastSeenMs));
    }
  }

  // ---------- events from the backend ----------
  function bindJob(turn, jobId) {
    if (!jobId || turn.jobId === jobId) return;
    turn.jobId = jobId;
    turn.node.dataset.jobId = jobId;
    turnsByJobId.set(jobId, turn);
    const early = earlyEvents.get(jobId) || [];
    earlyEvents.delete(jobId);
    early.forEach(onEvent);
  }

  function turnOf(frame) {
    if (frame.jobId && turnsByJobId.has(frame.jobId)) return turnsByJobId.get(frame.jobId);
    if (frame.clientMessageId && turnsByClientId.has(frame.clientMessageId)) {
      const turn = turnsByClientId.get(frame.clientMessageId);
      bindJob(turn, frame.jobId);
      return turn;
    }
    // A reply to sendMessage without its clientMessageId (the worker's circuit-open push carries only
    // the jobId): it answers the oldest message still waiting for its reply.
    const waiting = [...turnsByClientId.values()].find((t) => t.state === "sending" && !t.jobId);
    if (waiting && frame.jobId && (frame.event === "queued" || frame.event === "error")) {
      bindJob(waiting, frame.jobId);
      return waiting;
    }
    // A refusal of a frame that could not be read names neither: it is the oldest waiting one's.
    if (waiting && !frame.jobId && frame.event === "error") return waiting;
    return null;
  }

  function onEvent(frame) {
    if (frame.event === "pong") {
      clearTimeout(pongTimer);
      if (frame.resume) requestHistory(true); // answers pushed while the registration was lost
      return;
    }
    if (frame.event === "history") { onHistory(frame); return; }
    if (frame.event === "error" && !frame.jobId && SESSION_LOST.includes(frame.reason)) {
      if (ws) ws.close(4001, "session lost");
      return;
    }
    const turn = turnOf(frame);
    if (!turn) {
      if (frame.jobId && ["token", "answer", "error"].includes(frame.event)) {
        // An answer can overtake its `queued` (the worker is fast): keep it for a moment.
        if (!earlyEvents.has(frame.jobId)) earlyEvents.set(frame.jobId, []);
        earlyEvents.get(frame.jobId).push(frame);
      } else if (frame.event === "error" || frame.message) {
        say(frame.message || "The server could not accept a frame.");
      }
      return;
    }
    seen(Date.now());
    switch (frame.event) {
      case "queued":
        if (!["streaming", "answered"].includes(turn.state)) setState(turn, "queued");
        break;
      case "token": {
        if (turn.state === "answered") break;
        // A higher attempt is the job's LLM call made again (the first was cut): its text replaces
        // the earlier attempt's partial text; a late token of an earlier attempt is dropped.
        const attempt = frame.attempt || 1;
        if (attempt < (turn.attempt || 0)) break;
        if (attempt > (turn.attempt || 0)) { turn.attempt = attempt; turn.answer = ""; }
        turn.answer += frame.token || "";
        setState(turn, "streaming");
        showAnswer(turn, turn.answer);
        break;
      }
      case "answer":
        turn.answer = frame.message || "";
        setState(turn, "answered");
        showAnswer(turn, turn.answer);
        break;
      case "error":
        if (turn.state === "answered") break;
        // While the circuit is open the job is kept and answered later; anything else is final.
        if (frame.reason === CIRCUIT_OPEN) {
          setState(turn, "held", `${frame.message} Kept: it will be answered when the LLM is back.`);
        } else {
          setState(turn, "failed", frame.message || "failed");
        }
        break;
      default:
        break;
    }
  }

  function historyEntries(frame) {
    return frame.messages || frame.entries || frame.items || frame.history || [];
  }

  // Fill in what was missed while away; entries are deduplicated by jobId.
  function onHistory(frame) {
    if (frame.conversationId && frame.conversationId !== conversationId) return;
    for (const entry of historyEntries(frame)) {
      const jobId = entry.jobId;
      if (!jobId) continue;
      let turn = turnsByJobId.get(jobId);
      if (!turn && entry.role === "user") {
        // A message this page sent whose `queued` was lost with the connection: the same turn.
        turn = [...turnsByClientId.values()].find((t) => !t.jobId && t.frame && t.frame.message === entry.message);
        if (turn) {
          bindJob(turn, jobId);
          if (["sending", "waiting"].includes(turn.state)) setState(turn, "queued");
        }
      }
      if (!turn && entry.role === "user") {
        turn = newTurn("history-" + jobId, entry.message);
        bindJob(turn, jobId);
        setState(turn, "queued");
      }
      if (!turn) continue;
      if (entry.role === "assistant" && turn.state !== "answered") {
        turn.answer = entry.message;
        setState(turn, "answered");
        showAnswer(turn, entry.message);
      } else if (entry.role === "error" && !["answered", "failed"].includes(turn.state)) {
        setState(turn, "failed", entry.message);
      }
      if (entry.at) seen(Number(entry.at));
    }
  }

  // ---------- connection ----------
  class NameRefused extends Error {}

  async function fetchToken() {
    const response = await fetch("/dev/token?user=" + encodeURIComponent(user), { cache: "no-store" });
    if (response.status === 400) throw new NameRefused((await response.json()).message);
    if (!response.ok) throw new Error("token: HTTP " + response.status);
    return (await response.json()).token;
  }

  function wsUrl(token) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`;
  }

  async function connect() {
    clearTimeout(reconnectTimer);
    setStatus(everConnected ? "reconnecting" : "connecting", everConnected ? "reconnecting…" : "connecting…");
    let token;
    try {
      token = await fetchToken();
    } catch (err) {
      if (err instanceof NameRefused) {
        // Retrying cannot help: wait for another name.
        setStatus("offline", "choose another name");
        say(err.message);
        userInput.focus();
        return;
      }
      scheduleReconnect("gateway unreachable");
      return;
    }
    const socket = new WebSocket(wsUrl(token));
    ws = socket;
    socket.onopen = () => {
      if (ws !== socket) return;
      attempt = 0;
      statusBox.dataset.connections = String(Number(statusBox.dataset.connections || 0) + 1);
      setStatus("online", `online as ${user}`);
      const wasReconnect = everConnected;
      everConnected = true;
      startHeartbeat();
      requestHistory(wasReconnect);
      flushOutbox();
    };
    socket.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(msg.data); } catch { return; }
      onEvent(frame);
    };
    socket.onclose = (closeEvent) => {
      if (ws !== socket) return;
      stopHeartbeat();
      ws = null;
      const why = closeEvent.code === 1009 ? "message too big" : closeEvent.reason || "connection lost";
      scheduleReconnect(why);
    };
  }

  function scheduleReconnect(why) {
    // Exponential backoff with full jitter, so many pages do not come back at the same instant.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = Math.round(Math.random() * ceiling);
    attempt += 1;
    setStatus("reconnecting", `${why} — retrying in ${(delay / 1000).toFixed(1)} s`);
    reconnectTimer = setTimeout(connect, delay);
  }

  function startHeartbeat() {
    stopHeartbeat();
    pingTimer = setInterval(() => {
      if (!send({ action: "ping" })) return;
      clearTimeout(pongTimer);
      pongTimer = setTimeout(() => ws && ws.close(4000, "no pong"), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  function stopHeartbeat() {
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
  }

  function requestHistory(wasReconnect) {
    // On a reconnect, what happened since the last event; on a fresh page, the whole conversation.
    const since = wasReconnect || turnsByClientId.size ? Math.max(0, lastSeenMs - HISTORY_MARGIN_MS) : 0;
    send({ action: "history", conversationId, since });
  }

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function flushOutbox() {
    // A message sent just before the connection dropped may never have arrived: send it again.
    // The backend accepts a clientMessageId once, so a message that did arrive is not queued twice.
    for (const turn of turnsByClientId.values()) {
      if (turn.state === "sending" && !turn.jobId && turn.frame) send(turn.frame);
    }
    while (outbox.length && ws && ws.readyState === WebSocket.OPEN) {
      const turn = outbox.shift();
      send(turn.frame);
      if (turn.state === "waiting") setState(turn, "sending");
    }
  }

  // ---------- user actions ----------
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = messageInput.value.trim();
    if (!text) return;
    const clientMessageId = uuid();
    const turn = newTurn(clientMessageId, text);
    turn.frame = { action: "sendMessage", conversationId, clientMessageId, message: text };
    if (send(turn.frame)) setState(turn, "sending");
    else { setState(turn, "waiting"); outbox.push(turn); }
    messageInput.value = "";
    autosize();
    scrollDown();
  });

  messageInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  function autosize() {
    messageInput.style.height = "auto";
    messageInput.style.height = Math.min(messageInput.scrollHeight, 160) + "px";
  }
  messageInput.addEventListener("input", autosize);

  function resetConversation(newId) {
    conversationId = newId;
    store.set("conversationId", conversationId);
    lastSeenMs = Number(store.get("lastSeenMs." + conversationId) || 0);
    turnsByClientId.clear();
    turnsByJobId.clear();
    log.replaceChildren();
  }

  $("who").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = userInput.value.trim();
    if (!name || name === user) return;
    user = name;
    store.set("user", user);
    resetConversation(uuid());
    if (ws) { const old = ws; ws = null; stopHeartbeat(); old.close(1000, "switching user"); }
    attempt = 0;
    connect();
  });

  $("new-conversation").addEventListener("click", () => {
    resetConversation(uuid());
    messageInput.focus();
  });

  window.addEventListener("online", () => { if (!ws) { attempt = 0; connect(); } });

  connect();
  messageInput.focus();
})();
