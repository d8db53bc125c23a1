// cloud-ia chat page: sign in with Amazon Cognito, one WebSocket, the backend's JSON frames, and nothing
// lost across reconnects or token refreshes.
// Protocol: docs in ARCHITECTURE.md ("Client <-> backend protocol"). No build step, no inline code (the
// hosted page's CSP is `default-src 'self'`), nothing loaded from elsewhere.
"use strict";

(() => {
  // Each interval can be overridden from the page's query string (?ping_ms=...), for tests and demos.
  const query = new URLSearchParams(location.search);
  const setting = (name, fallback) => Number(query.get(name)) || fallback;
  const PING_INTERVAL_MS = setting("ping_ms", 30000);   // heartbeat; API Gateway drops a connection idle 10 min
  const PONG_TIMEOUT_MS = setting("pong_timeout_ms", 10000); // no pong within this: dead, reconnect
  const BACKOFF_BASE_MS = setting("backoff_ms", 500);   // reconnect delays: 0.5 s, 1 s, 2 s ... capped, full jitter
  const BACKOFF_CAP_MS = setting("backoff_cap_ms", 30000);
  // Tokens are refreshed this long before they expire (Cognito's last an hour by default); a test sets
  // e.g. 3595 to have a refresh five seconds after signing in.
  const REFRESH_BEFORE_EXP_S = setting("refresh_before_exp_s", 300);
  // After a refresh the connection opened with the old token stays open this long at most, so that an
  // answer it is streaming goes on streaming there (the worker sends tokens to the connections it saw
  // when the job started); the new connection takes everything else.
  const DRAIN_MAX_MS = setting("drain_ms", 60000);
  const REFRESH_RETRY_MS = 2000;       // Cognito unreachable: try again in 2 s, 4 s ... at most a minute
  const HISTORY_MARGIN_MS = 30000;     // ask a little further back than the last event (clock skew)
  const CIRCUIT_OPEN = "circuit_open";
  // The backend no longer knows this connection (its registration expired, Redis restarted ...):
  // a new connection registers again, and messages still waiting for a reply are sent again.
  const SESSION_LOST = ["unauthenticated", "token_expired", "token_invalid", "token_missing"];
  const TOKEN_REFUSED = ["token_expired", "token_invalid"];
  const COGNITO_TARGET = "AWSCognitoIdentityProviderService.";
  const SESSION_KEY = "cloudia.session";   // sessionStorage: this tab only, gone when it closes

  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const statusBox = $("status");
  const statusText = $("status-text");
  const messageInput = $("message");
  const notice = $("notice");
  const emptyHint = $("empty").cloneNode(true);
  // The day's token budget, as the last `queued` or budget refusal told it, in a line under the composer.
  const budgetLine = document.createElement("p");
  budgetLine.id = "budget";
  budgetLine.className = "budget";
  budgetLine.hidden = true;
  $("composer").appendChild(budgetLine);

  // Per-user state that is no secret (which conversation, how far it was read), kept across sessions in
  // localStorage under the user's `sub`. Tokens never go there: see `saveSession`.
  const store = {
    get: (k) => localStorage.getItem(`cloudia.${userId}.${k}`),
    set: (k, v) => localStorage.setItem(`cloudia.${userId}.${k}`, v),
  };
  const uuid = () => (crypto.randomUUID ? crypto.randomUUID()
    : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) =>
      (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16)));

  let config = null;        // config.json: websocketUrl, region, userPoolId, userPoolClientId, cognitoEndpoint
  let session = null;       // {idToken, accessToken, refreshToken, receivedAt, lifetimeS}, null when signed out
  let sessionEpoch = 0;     // bumped on every sign-in and sign-out: late answers of an older session are dropped
  let userId = "";          // the tokens' `sub`
  let userName = "";
  let challenge = null;     // {session, username}: NEW_PASSWORD_REQUIRED being answered
  let conversationId = "";
  let lastSeenMs = 0;

  // One turn per message the person sent, found by clientMessageId or, once queued, by jobId.
  const turnsByClientId = new Map();
  const turnsByJobId = new Map();
  const earlyEvents = new Map();   // jobId -> [frame, socket] that arrived before their `queued`
  const outbox = [];               // turns written while offline, sent on the next connection

  let ws = null;                   // the current connection: frames are sent here, pings go here
  let replacement = null;          // a connection opening with fresh tokens, current once open
  const retiring = new Set();      // connections opened with older tokens, closed once drained
  let attempt = 0;
  let replaceAttempt = 0;
  let reconnectTimer = null;
  let replaceTimer = null;
  let refreshTimer = null;
  let refreshFailures = 0;
  let refreshing = null;           // the refresh under way (a promise), so that only one runs
  let needRefresh = false;         // the backend refused the token: refresh before connecting again
  let pingTimer = null;
  let pongTimer = null;
  let historyRequest = null;       // the history page asked for last (sent again when rate limited)
  let historyTimer = null;
  let everConnected = false;
  let connectionCount = 0;

  // ---------- views ----------
  // `loading` (reading config.json), `error` (the page cannot start), `signin`, `new-password`, `chat`.
  function showView(view) {
    document.body.dataset.view = view;
    $("boot").hidden = !["loading", "error"].includes(view);
    $("auth").hidden = !["signin", "new-password"].includes(view);
    $("signin-form").hidden = view !== "signin";
    $("new-password-form").hidden = view !== "new-password";
    const chat = view === "chat";
    $("account").hidden = !chat;
    log.hidden = !chat;
    $("composer").hidden = !chat;
    if (!chat) notice.hidden = true;
    if (view === "signin") ($("username").value ? $("password") : $("username")).focus();
    if (view === "new-password") $("new-password").focus();
    if (chat) messageInput.focus();
  }

  function authMessage(text, kind = "error") {
    const box = $("auth-message");
    box.textContent = text || "";
    box.dataset.kind = kind;
    box.hidden = !text;
  }

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
    const turn = { node, clientMessageId, jobId: null, state: null, answer: "", frame: null, tokenSocket: null };
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
    showRetry(turn);
  }

  // A failed job (one the backend queued: it has a jobId) can be queued again without retyping it.
  function showRetry(turn) {
    let button = turn.node.querySelector("button.retry");
    const retriable = turn.state === "failed" && !!turn.jobId;
    if (retriable && !button) {
      button = document.createElement("button");
      button.type = "button";
      button.className = "retry ghost";
      button.textContent = "Retry";
      button.addEventListener("click", () => retryTurn(turn));
      turn.node.querySelector(".bubble.user footer").appendChild(button);
    }
    if (button) button.hidden = !retriable;
  }

  // `retry` queues the same job again (the backend checks it is this user's, and failed, and the limits);
  // its reply is `queued` (or an `error` naming the job), like a sendMessage's.
  function retryTurn(turn) {
    if (turn.state !== "failed" || !turn.jobId) return;
    if (!send({ action: "retry", jobId: turn.jobId })) {
      say("Not connected: retry once the page is back online.");
      return;
    }
    turn.retriedAtMs = Date.now();
    setState(turn, "sending", "retrying…");
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

  // `budget`: {remaining, limit, resetsAt (epoch s)}; null forgets it (signed out).
  function showBudget(budget) {
    if (!budget || typeof budget.remaining !== "number" || typeof budget.limit !== "number") {
      budgetLine.hidden = true;
      budgetLine.textContent = "";
      return;
    }
    const number = (n) => Number(n).toLocaleString();
    const resets = new Date(Number(budget.resetsAt) * 1000);
    const at = Number.isNaN(resets.getTime()) ? ""
      : ` · resets at ${resets.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
    budgetLine.textContent = `${number(budget.remaining)} of ${number(budget.limit)} tokens left today${at}`;
    budgetLine.title = "Each message reserves the most its answer can cost; what it does not use comes back "
      + "once it is answered.";
    budgetLine.dataset.level = budget.remaining <= 0 ? "out" : budget.remaining < budget.limit / 10 ? "low" : "ok";
    budgetLine.hidden = false;
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
    early.forEach(([frame, socket]) => onEvent(frame, socket));
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

  function isOpen(socket) { return !!socket && socket.readyState === WebSocket.OPEN; }

  // `socket`: the connection the frame came on. Right after a token refresh two connections are open,
  // and a frame pushed to both arrives twice: every event below is idempotent except `token`, which is
  // taken from one connection per answer.
  function onEvent(frame, socket) {
    if (frame.event === "pong") {
      if (socket !== ws) return;
      clearTimeout(pongTimer);
      if (frame.resume) requestHistory(true); // answers pushed while the registration was lost
      return;
    }
    if (frame.event === "history") { onHistory(frame); return; }
    if (frame.event === "error" && frame.action === "history" && frame.reason === "rate_limited") {
      // A long history comes in pages, each a frame counted against the limit: go on when it allows.
      clearTimeout(historyTimer);
      historyTimer = setTimeout(() => { if (historyRequest) send(historyRequest); },
        1000 * (Number(frame.retryAfter) || 5));
      return;
    }
    if (frame.event === "error" && !frame.jobId && SESSION_LOST.includes(frame.reason)) {
      if (socket === ws && TOKEN_REFUSED.includes(frame.reason)) needRefresh = true;
      if (socket) socket.close(4001, "session lost");
      return;
    }
    if (frame.budget && (frame.event === "queued" || frame.event === "error")) showBudget(frame.budget);
    const turn = turnOf(frame);
    if (!turn) {
      if (frame.jobId && ["token", "answer", "error"].includes(frame.event)) {
        // An answer can overtake its `queued` (the worker is fast): keep it for a moment.
        if (!earlyEvents.has(frame.jobId)) earlyEvents.set(frame.jobId, []);
        earlyEvents.get(frame.jobId).push([frame, socket]);
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
        if (attempt > (turn.attempt || 0)) { turn.attempt = attempt; turn.answer = ""; turn.tokenSocket = socket; }
        // The same tokens on a second connection are the same text again: only one connection's count.
        if (turn.tokenSocket && turn.tokenSocket !== socket && isOpen(turn.tokenSocket)) break;
        turn.tokenSocket = socket;
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
      } else if (entry.role === "error" && !["answered", "failed"].includes(turn.state)
        && !(turn.retriedAtMs && Number(entry.at) <= turn.retriedAtMs)) { // not the failure a retry replaced
        setState(turn, "failed", entry.message);
      }
      if (entry.at) seen(Number(entry.at));
    }
    // A page of the history: `next` asks for the one after it, until a page without `next`.
    if (frame.next) {
      historyRequest = { action: "history", conversationId, cursor: frame.next };
      send(historyRequest);
    } else {
      historyRequest = null;
    }
  }

  // ---------- Cognito (its JSON API over HTTPS: the same calls on AWS and on the emulator) ----------
  class AuthError extends Error {
    constructor(type, message, retryable = false) {
      super(message);
      this.type = type;
      this.retryable = retryable;
    }
  }

  async function cognito(action, body) {
    let response;
    try {
      response = await fetch(config.cognitoEndpoint, {
        method: "POST",
        cache: "no-store",
        headers: { "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": COGNITO_TARGET + action },
        body: JSON.stringify(body),
      });
    } catch {
      throw new AuthError("NetworkError", "The sign-in service cannot be reached.", true);
    }
    let data = {};
    try { data = await response.json(); } catch { /* not JSON: the status says enough */ }
    if (!response.ok) {
      // `__type` is "NotAuthorizedException", or with a namespace: "...#NotAuthorizedException".
      const type = String(data.__type || data.code || "").split("#").pop() || `HTTP ${response.status}`;
      const retryable = response.status >= 500 || ["TooManyRequestsException", "InternalErrorException"].includes(type);
      throw new AuthError(type, data.message || data.Message || "", retryable);
    }
    return data;
  }

  // Cognito's errors in words for the person: a sentence of ours where Cognito's message is terse, then its own.
  const AUTH_WORDS = {
    NetworkError: "The sign-in service cannot be reached. Check the connection and try again.",
    UserNotFoundException: "Incorrect username or password.",
    InvalidPasswordException: "That password is not accepted: use at least 12 characters, with upper- and "
      + "lower-case letters, a number and a symbol.",
    PasswordResetRequiredException: "Your password has to be reset before you can sign in: ask the operator.",
    UserNotConfirmedException: "This account is not confirmed yet: ask the operator.",
    TooManyRequestsException: "Too many attempts: wait a little, then try again.",
    TooManyFailedAttemptsException: "Too many failed attempts: wait a little, then try again.",
    LimitExceededException: "Too many attempts: wait a little, then try again.",
    InvalidParameterException: "The sign-in service refused the request.",
    ResourceNotFoundException: "This page's sign-in settings do not match the user pool (unknown app client).",
    CodeMismatchException: "That code is not right.",
    ExpiredCodeException: "That code has expired.",
  };

  function inWords(err) {
    if (!(err instanceof AuthError)) return `Sign-in failed: ${err.message || err}`;
    const lead = AUTH_WORDS[err.type];
    const message = (err.message || "").trim();
    if (err.type === "UserNotFoundException") return lead; // no hint that the name is unknown
    if (lead && message && !lead.includes(message)) return `${lead} (${message})`;
    return lead || message || `Sign-in failed (${err.type}).`;
  }

  function claims(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")), (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return {};
    }
  }

  // ---------- the session: tokens, refresh, sign-out ----------
  function saveSession() {
    // sessionStorage, never localStorage: the tokens last as long as this tab (a reload keeps them).
    try { sessionStorage.setItem(SESSION_KEY, JSON.stringify(session)); } catch { /* memory only */ }
  }

  function loadSession() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      return saved && saved.accessToken && saved.refreshToken ? saved : null;
    } catch {
      return null;
    }
  }

  function setTokens(result, refreshToken) {
    const access = claims(result.AccessToken);
    // The token's lifetime from its own claims, counted from when it arrived on this clock: a browser
    // whose clock is off does not refresh too late (or all the time).
    const lifetimeS = access.exp && access.iat ? access.exp - access.iat : Number(result.ExpiresIn) || 3600;
    session = {
      idToken: result.IdToken || "",
      accessToken: result.AccessToken,
      refreshToken: result.RefreshToken || refreshToken,
      receivedAt: Date.now(),
      lifetimeS,
    };
    saveSession();
    identify();
    scheduleRefresh();
  }

  function identify() {
    const id = claims(session.idToken);
    const access = claims(session.accessToken);
    userId = access.sub || id.sub || "";
    const cognitoName = id["cognito:username"] || access.username;
    // A pool that signs in by e-mail has the sub as its user name: the address reads better.
    userName = id.preferred_username || (cognitoName !== userId && cognitoName) || id.email || cognitoName || userId;
    $("account-name").textContent = userName;
    $("account-name").title = userName;
  }

  const expiresAt = () => session.receivedAt + session.lifetimeS * 1000;
  const tokenUsable = () => !!session && Date.now() < expiresAt() - 10000;

  function scheduleRefresh(delayMs) {
    clearTimeout(refreshTimer);
    if (!session) return;
    const due = session.receivedAt + (session.lifetimeS - REFRESH_BEFORE_EXP_S) * 1000 - Date.now();
    refreshTimer = setTimeout(refreshAndReconnect, Math.max(1000, delayMs ?? due));
  }

  async function refreshAndReconnect() {
    if ((await refreshTokens()) === "ok") reconnectWithFreshToken();
  }

  // "ok", "unreachable" (tried again later; the connection goes on with the current token), "ended"
  // (Cognito refused the refresh token: back to the sign-in form) or "stale" (signed out meanwhile).
  function refreshTokens() {
    if (refreshing) return refreshing;
    const epoch = sessionEpoch;
    refreshing = (async () => {
      try {
        const result = await cognito("InitiateAuth", {
          AuthFlow: "REFRESH_TOKEN_AUTH", ClientId: config.userPoolClientId,
          AuthParameters: { REFRESH_TOKEN: session.refreshToken },
        });
        if (epoch !== sessionEpoch) return "stale";
        const tokens = result.AuthenticationResult;
        if (!tokens || !tokens.AccessToken) throw new AuthError("NotAuthorizedException", "no tokens in the answer");
        setTokens(tokens, session.refreshToken);  // Cognito keeps the refresh token unless it rotates it
        refreshFailures = 0;
        needRefresh = false;
        return "ok";
      } catch (err) {
        if (epoch !== sessionEpoch) return "stale";
        if (err.retryable) {
          refreshFailures += 1;
          scheduleRefresh(Math.min(60000, REFRESH_RETRY_MS * 2 ** (refreshFailures - 1)));
          return "unreachable";
        }
        endSession(`Your session has ended: ${inWords(err)} Please sign in again.`);
        return "ended";
      } finally {
        if (epoch === sessionEpoch) refreshing = null;
      }
    })();
    return refreshing;
  }

  function startSession(result) {
    sessionEpoch += 1;
    setTokens(result, "");
    begin();
  }

  // Signed in (or the tab's session restored): this user's conversation, and a connection.
  function begin() {
    conversationId = store.get("conversationId") || uuid();
    store.set("conversationId", conversationId);
    resetConversation(conversationId);
    everConnected = false;
    attempt = 0;
    authMessage("");
    $("password").value = "";
    $("new-password").value = "";
    $("new-password-again").value = "";
    showView("chat");
    connect();
  }

  // Back to the sign-in form: every connection closed, every timer stopped, the tokens forgotten.
  function endSession(message, kind = "error") {
    sessionEpoch += 1;
    session = null;
    refreshing = null;
    needRefresh = false;
    challenge = null;
    try { sessionStorage.removeItem(SESSION_KEY); } catch { /* nothing kept */ }
    [refreshTimer, reconnectTimer, replaceTimer].forEach(clearTimeout);
    stopHeartbeat();
    const sockets = [ws, replacement, ...retiring];
    ws = null;
    replacement = null;
    retiring.clear();
    sockets.forEach((s) => s && s.close(1000, "signed out"));
    resetConversation("");
    outbox.length = 0;
    userId = "";
    userName = "";
    showBudget(null);
    setStatus("offline", "signed out");
    authMessage(message, kind);
    showView("signin");
  }

  function signOut() {
    const refreshToken = session && session.refreshToken;
    endSession("You are signed out.", "info");
    if (!refreshToken) return;
    // RevokeToken ends the refresh token (and the tokens issued with it) at Cognito, so that it is
    // worthless even if it was copied. moto 5.2.5 (the local emulator) does not implement RevokeToken
    // (it answers 500, without CORS headers, so the browser reports a network error): locally the
    // sign-out is the page's part alone — tokens forgotten, connection closed — and that is not an error.
    cognito("RevokeToken", { ClientId: config.userPoolClientId, Token: refreshToken }).catch(() => {});
  }

  // ---------- connection ----------
  function wsUrl(token) {
    const url = new URL(config.websocketUrl, location.href);
    url.searchParams.set("token", token);
    return url.toString();
  }

  async function connect() {
    clearTimeout(reconnectTimer);
    if (!session || ws) return;
    const epoch = sessionEpoch;
    setStatus(everConnected ? "reconnecting" : "connecting", everConnected ? "reconnecting…" : "connecting…");
    if (needRefresh || !tokenUsable()) {
      // The token expired (the tab slept, or the backend refused it): a fresh one first.
      const outcome = await refreshTokens();
      if (epoch !== sessionEpoch || ws) return;
      if (outcome === "unreachable") { scheduleReconnect("sign-in service unreachable"); return; }
      if (outcome !== "ok") return;
    }
    openSocket(false);
  }

  // After a refresh: a new connection with the fresh token; the old one stays current until the new one
  // is open (nothing sent meanwhile goes nowhere), then drains (see DRAIN_MAX_MS).
  function reconnectWithFreshToken() {
    clearTimeout(replaceTimer);
    if (!session) return;
    if (!isOpen(ws)) return; // connecting, or away: the next connection takes the fresh token anyway
    if (replacement) { const stale = replacement; replacement = null; stale.close(1000, "superseded"); }
    openSocket(true);
  }

  function openSocket(replacing) {
    const socket = new WebSocket(wsUrl(session.accessToken));
    if (replacing) replacement = socket; else ws = socket;
    socket.onopen = () => {
      if (replacing) {
        if (replacement !== socket) { socket.close(1000, "superseded"); return; }
        replacement = null;
        replaceAttempt = 0;
        const old = ws;
        ws = socket;
        if (old) retire(old);
      } else if (ws !== socket) {
        return;
      }
      attempt = 0;
      connectionCount += 1;
      statusBox.dataset.connections = String(connectionCount);
      setStatus("online", `online as ${userName}`);
      const wasReconnect = everConnected;
      everConnected = true;
      startHeartbeat();
      requestHistory(wasReconnect);
      flushOutbox();
    };
    socket.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(msg.data); } catch { return; }
      onEvent(frame, socket);
      drain();
    };
    socket.onclose = (closeEvent) => {
      retiring.delete(socket);
      if (socket === replacement) {
        // The fresh token's connection did not open: the current one goes on; try again later.
        replacement = null;
        const delay = Math.round(Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** replaceAttempt));
        replaceAttempt += 1;
        replaceTimer = setTimeout(reconnectWithFreshToken, delay);
        return;
      }
      if (ws !== socket) return;
      stopHeartbeat();
      ws = null;
      const why = closeEvent.code === 1009 ? "message too big" : closeEvent.reason || "connection lost";
      scheduleReconnect(why);
    };
  }

  function retire(old) {
    retiring.add(old);
    setTimeout(() => { if (retiring.delete(old)) old.close(1000, "token refreshed"); }, DRAIN_MAX_MS);
    drain();
  }

  // A connection opened with an older token closes once nothing may still stream to it alone: no answer
  // it streams, and no message waiting for its answer to begin.
  function drain() {
    for (const old of retiring) {
      const busy = [...turnsByClientId.values()].some((t) => (t.state === "streaming" && t.tokenSocket === old)
        || (["sending", "queued"].includes(t.state) && !isOpen(t.tokenSocket)));
      if (!busy) {
        retiring.delete(old);
        old.close(1000, "token refreshed");
      }
    }
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
    clearTimeout(historyTimer);
    historyRequest = { action: "history", conversationId, since };
    send(historyRequest);
  }

  function send(frame) {
    if (!isOpen(ws)) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function flushOutbox() {
    // A message sent just before the connection dropped may never have arrived: send it again.
    // The backend accepts a clientMessageId once, so a message that did arrive is not queued twice.
    for (const turn of turnsByClientId.values()) {
      if (turn.state === "sending" && !turn.jobId && turn.frame) send(turn.frame);
    }
    while (outbox.length && isOpen(ws)) {
      const turn = outbox.shift();
      send(turn.frame);
      if (turn.state === "waiting") setState(turn, "sending");
    }
  }

  // ---------- user actions ----------
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = messageInput.value.trim();
    if (!text || !session) return;
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
    if (newId) store.set("conversationId", conversationId);
    lastSeenMs = newId ? Number(store.get("lastSeenMs." + conversationId) || 0) : 0;
    turnsByClientId.clear();
    turnsByJobId.clear();
    earlyEvents.clear();
    outbox.length = 0;
    log.replaceChildren(emptyHint.cloneNode(true));
  }

  $("new-conversation").addEventListener("click", () => {
    resetConversation(uuid());
    messageInput.focus();
  });

  $("sign-out").addEventListener("click", signOut);

  async function busy(button, label, work) {
    const text = button.textContent;
    button.disabled = true;
    button.textContent = label;
    try { await work(); } finally { button.disabled = false; button.textContent = text; }
  }

  // Cognito's answer to a sign-in step: tokens, or another step to take.
  function onAuthResult(result, username) {
    if (result.AuthenticationResult) {
      challenge = null;
      startSession(result.AuthenticationResult);
    } else if (result.ChallengeName === "NEW_PASSWORD_REQUIRED") {
      const params = result.ChallengeParameters || {};
      challenge = { session: result.Session, username: params.USER_ID_FOR_SRP || params.USERNAME || username };
      $("new-password-username").value = username;
      authMessage("");
      showView("new-password");
    } else {
      authMessage(`This account needs a sign-in step this page does not offer (${result.ChallengeName}): `
        + "ask the operator.");
    }
  }

  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const username = $("username").value.trim();
    const password = $("password").value;
    if (!username || !password || !config) return;
    busy($("signin-submit"), "Signing in…", async () => {
      authMessage("");
      try {
        const result = await cognito("InitiateAuth", {
          AuthFlow: "USER_PASSWORD_AUTH", ClientId: config.userPoolClientId,
          AuthParameters: { USERNAME: username, PASSWORD: password },
        });
        $("password").value = "";
        onAuthResult(result, username);
      } catch (err) {
        authMessage(inWords(err));
        $("password").value = "";
        $("password").focus();
      }
    });
  });

  $("new-password-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const password = $("new-password").value;
    if (!challenge || !password) return;
    if (password !== $("new-password-again").value) {
      authMessage("The two passwords are not the same.");
      $("new-password-again").select();
      return;
    }
    busy($("new-password-submit"), "Setting it…", async () => {
      authMessage("");
      try {
        const result = await cognito("RespondToAuthChallenge", {
          ChallengeName: "NEW_PASSWORD_REQUIRED", ClientId: config.userPoolClientId, Session: challenge.session,
          ChallengeResponses: { USERNAME: challenge.username, NEW_PASSWORD: password },
        });
        onAuthResult(result, challenge.username);
      } catch (err) {
        if (err.type === "NotAuthorizedException") {
          // The challenge's session lasts minutes: sign in again with the temporary password.
          challenge = null;
          showView("signin");
          authMessage(`${inWords(err)} Please sign in again with your temporary password.`);
          return;
        }
        authMessage(inWords(err));
        $("new-password").select();
      }
    });
  });

  $("new-password-cancel").addEventListener("click", () => {
    challenge = null;
    authMessage("");
    showView("signin");
  });

  window.addEventListener("online", () => { if (session && !ws) { attempt = 0; connect(); } });

  // ---------- start ----------
  const CONFIG_KEYS = ["websocketUrl", "userPoolClientId", "cognitoEndpoint"];

  async function readConfig() {
    let response;
    try {
      response = await fetch("config.json", { cache: "no-store" });
    } catch (err) {
      throw new Error(`config.json could not be fetched (${err.message || err}).`);
    }
    let data = null;
    try { data = await response.json(); } catch { /* said below */ }
    if (!response.ok) {
      throw new Error(`config.json answered HTTP ${response.status}${data && data.message ? `: ${data.message}` : ""}.`);
    }
    if (!data || typeof data !== "object") throw new Error("config.json is not a JSON object.");
    if (!data.cognitoEndpoint && data.region) data.cognitoEndpoint = `https://cognito-idp.${data.region}.amazonaws.com/`;
    const missing = CONFIG_KEYS.filter((k) => !data[k]);
    if (missing.length) throw new Error(`config.json lacks ${missing.join(", ")}.`);
    return data;
  }

  async function start() {
    showView("loading");
    try {
      config = await readConfig();
    } catch (err) {
      $("boot-message").textContent = `This page cannot start: it could not read its settings. ${err.message} `
        + "Reload the page to try again.";
      setStatus("offline", "not configured");
      showView("error");
      return;
    }
    const saved = loadSession();
    if (saved) {
      // This tab was signed in (a reload): the same session, its tokens refreshed if they are due.
      session = saved;
      sessionEpoch += 1;
      identify();
      scheduleRefresh();
      begin();
      return;
    }
    setStatus("offline", "signed out");
    showView("signin");
  }

  start();
})();
