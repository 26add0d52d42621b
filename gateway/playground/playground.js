// The playground: a key, a model from /v1/models, one streamed chat turn and its figures.
//
// It talks to this gateway's own /v1 API like any OpenAI client, with the key the person
// typed (kept in sessionStorage only). Everything the gateway or a model says is put on the
// page as text (textContent, Text nodes, Option labels), never parsed as HTML, and the
// page's Content-Security-Policy allows no inline script anyway.
"use strict";

(() => {
  const KEY_ITEM = "cf-ai-endpoint.playground.key";
  const MODEL_ITEM = "cf-ai-endpoint.playground.model";
  const CHAT_TASK = "Text Generation";

  const $ = (id) => document.getElementById(id);
  const el = {
    keyForm: $("key-form"), key: $("api-key"), forget: $("forget-key"),
    model: $("model-select"), modelInfo: $("model-info"), modelText: $("model-description"),
    chatForm: $("chat-form"), system: $("system"), prompt: $("prompt"),
    temperature: $("temperature"), maxTokens: $("max-tokens"), send: $("send"), stop: $("stop"),
    status: $("status"), error: $("error"), answer: $("answer"), stats: $("stats"),
  };
  const models = new Map(); // id -> the /v1/models entry
  const details = new Map(); // id -> metadata of /v1/models/{id} (null while on its way)
  let running = null; // the AbortController of the stream in flight

  // -- small helpers ------------------------------------------------------------------------

  function setStatus(text) {
    el.status.textContent = text ? `· ${text}` : "";
  }

  function clearError() {
    el.error.replaceChildren();
    el.error.hidden = true;
  }

  /** Show an OpenAI error object ({message, code, type}) as text. */
  function showError(error, status) {
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = String(error.code || error.type || (status ? `HTTP ${status}` : "error"));
    const message = document.createElement("span");
    message.className = "message";
    message.textContent = String(error.message || "Unknown error");
    el.error.replaceChildren(code, document.createTextNode(": "), message);
    el.error.hidden = false;
    setStatus("failed");
  }

  /** A definition list of [label, value, name] rows (values as text). */
  function fillFacts(list, rows) {
    const items = rows.filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([label, value, name]) => {
        const row = document.createElement("div");
        const term = document.createElement("dt");
        const detail = document.createElement("dd");
        term.textContent = label;
        detail.textContent = String(value);
        if (name) detail.dataset.stat = name;
        row.append(term, detail);
        return row;
      });
    list.replaceChildren(...items);
    list.hidden = items.length === 0;
  }

  function currentKey() {
    return el.key.value.trim();
  }

  /** The error object of a failed response: OpenAI's envelope, or what the status says. */
  async function errorOf(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // not JSON: a proxy's error page, say
    }
    if (body && typeof body === "object" && body.error && typeof body.error === "object") {
      return body.error;
    }
    return { message: `${response.status} ${response.statusText}`.trim(), code: null };
  }

  // -- models -------------------------------------------------------------------------------

  /** "tools, json mode, streaming" from a list of names or an object of flags. */
  function capabilityText(value) {
    const label = (name) => String(name).replace(/_/g, " ");
    if (Array.isArray(value)) return value.map(label).join(", ");
    if (value && typeof value === "object") {
      return Object.entries(value)
        .filter(([, on]) => on !== false && on !== null && on !== undefined)
        .map(([name, on]) => (on === true ? label(name) : `${label(name)}: ${on}`)).join(", ");
    }
    return value === null || value === undefined ? "" : String(value);
  }

  /** GET /v1/models/{id}: what the list leaves out (capabilities), once per model. */
  async function loadDetails(id) {
    if (details.has(id) || !currentKey()) return;
    details.set(id, null); // asked for: don't ask again while it is on its way
    const path = id.split("/").map(encodeURIComponent).join("/");
    try {
      const response = await fetch(`/v1/models/${path}`, {
        headers: { Authorization: `Bearer ${currentKey()}` }, cache: "no-store",
      });
      if (!response.ok) return; // the list's facts stay; a chat request will show any error
      const entry = await response.json();
      details.set(id, (entry && entry.metadata) || {});
      if (el.model.value === id) showModelInfo();
    } catch (_) {
      details.delete(id); // the network failed: try again next time the model is picked
    }
  }

  function showModelInfo() {
    const entry = models.get(el.model.value);
    const meta = { ...((entry && entry.metadata) || {}),
      ...((entry && details.get(entry.id)) || {}) };
    if (entry && meta.capabilities == null) loadDetails(entry.id); // null or absent
    const contextWindow = Number.isFinite(meta.context_window)
      ? `${meta.context_window.toLocaleString("en-US")} tokens` : null;
    fillFacts(el.modelInfo, [
      ["Task", meta.task, "task"],
      ["Context window", contextWindow, "context_window"],
      ["Capabilities", capabilityText(meta.capabilities), "capabilities"],
      ["Owned by", entry && entry.owned_by, "owned_by"],
    ]);
    el.modelText.textContent = meta.description ? String(meta.description) : "";
    el.modelText.hidden = !meta.description;
    if (entry) sessionStorage.setItem(MODEL_ITEM, entry.id);
  }

  function fillModels(entries) {
    models.clear();
    details.clear();
    const options = [];
    for (const entry of entries) {
      if (!entry || typeof entry.id !== "string") continue;
      models.set(entry.id, entry);
      const task = entry.metadata && entry.metadata.task;
      const label = task && task !== CHAT_TASK ? `${entry.id} (${task})` : entry.id;
      options.push(new Option(label, entry.id)); // Option() sets text, never markup
    }
    if (options.length === 0) options.push(new Option("This gateway serves no models", ""));
    el.model.replaceChildren(...options);
    el.model.disabled = models.size === 0;
    const remembered = sessionStorage.getItem(MODEL_ITEM);
    if (remembered && models.has(remembered)) el.model.value = remembered;
    showModelInfo();
  }

  async function loadModels() {
    clearError();
    const key = currentKey();
    if (!key) {
      showError({ message: "Type an API key first.", code: "missing_api_key" });
      return;
    }
    sessionStorage.setItem(KEY_ITEM, key);
    setStatus("loading models…");
    try {
      const response = await fetch("/v1/models", {
        headers: { Authorization: `Bearer ${key}` }, cache: "no-store",
      });
      if (!response.ok) {
        showError(await errorOf(response), response.status);
        return;
      }
      const body = await response.json();
      fillModels(Array.isArray(body.data) ? body.data : []);
      setStatus(`${models.size} models`);
    } catch (error) {
      showError({ message: `The gateway could not be reached (${error.message}).`,
        code: "connection_error" });
    }
  }

  // -- chat ---------------------------------------------------------------------------------

  /** The `data:` payloads of an SSE body, one string per event (comments skipped). */
  async function* sseData(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
        buffer = buffer.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5));
          if (data.length) yield data.join("\n");
        }
        if (done) return;
      }
    } finally {
      reader.cancel().catch(() => {}); // closes the connection when we stop early
    }
  }

  function requestBody() {
    const messages = [];
    if (el.system.value.trim()) messages.push({ role: "system", content: el.system.value });
    messages.push({ role: "user", content: el.prompt.value });
    const body = {
      model: el.model.value, messages, stream: true, stream_options: { include_usage: true },
    };
    if (el.temperature.value !== "") body.temperature = Number(el.temperature.value);
    if (el.maxTokens.value !== "") body.max_tokens = Number(el.maxTokens.value);
    return body;
  }

  function setRunning(controller) {
    running = controller;
    el.send.disabled = Boolean(controller);
    el.stop.disabled = !controller;
  }

  function showStats(run) {
    const end = run.end || performance.now();
    const ttft = run.firstToken === null ? null : run.firstToken - run.start;
    const completion = run.usage ? run.usage.completion_tokens : run.pieces;
    const generating = run.firstToken === null ? 0 : (end - run.firstToken) / 1000;
    const rate = completion && generating > 0 ? completion / generating : null;
    fillFacts(el.stats, [
      ["Time to first token", ttft === null ? null : `${Math.round(ttft)} ms`, "ttft"],
      ["Tokens/s", rate === null ? null : rate.toFixed(1), "tokens_per_second"],
      ["Prompt tokens", run.usage ? run.usage.prompt_tokens : null, "prompt_tokens"],
      ["Completion tokens", run.usage ? completion : (run.pieces ? `≈${run.pieces}` : null),
        "completion_tokens"],
      ["Total", `${((end - run.start) / 1000).toFixed(2)} s`, "total"],
      ["Finish", run.finish || (run.stopped ? "stopped" : null), "finish_reason"],
    ]);
  }

  /** Apply one chat.completion.chunk; false when the stream carried an error instead. */
  function applyChunk(run, chunk) {
    if (chunk.error) {
      showError(chunk.error);
      return false;
    }
    if (chunk.usage) run.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const text = choice.delta && choice.delta.content;
      if (typeof text === "string" && text) {
        if (run.firstToken === null) run.firstToken = performance.now();
        run.pieces += 1;
        el.answer.append(document.createTextNode(text));
      }
      if (choice.finish_reason) run.finish = choice.finish_reason;
    }
    return true;
  }

  async function send(event) {
    event.preventDefault();
    if (running) return;
    clearError();
    if (!currentKey()) return showError({ message: "Type an API key first.", code: "missing_api_key" });
    if (!el.model.value) return showError({ message: "Load the models and pick one.", code: "no_model" });
    if (!el.prompt.value.trim()) return showError({ message: "Type a prompt.", code: "empty_prompt" });
    sessionStorage.setItem(KEY_ITEM, currentKey());
    el.answer.replaceChildren();
    el.stats.replaceChildren();
    const controller = new AbortController();
    const run = { start: performance.now(), firstToken: null, end: null, usage: null,
      pieces: 0, finish: null, stopped: false };
    setRunning(controller);
    setStatus("waiting for the first token…");
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { Authorization: `Bearer ${currentKey()}`, "Content-Type": "application/json" },
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (!response.ok) {
        showError(await errorOf(response), response.status);
        return;
      }
      setStatus("streaming…");
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch (_) {
          showError({ message: `The gateway sent an event that is not JSON: ${data.slice(0, 200)}`,
            code: "bad_event" });
          break;
        }
        if (!applyChunk(run, chunk)) break;
        if (run.firstToken !== null && !run.end) setStatus("streaming…");
      }
      if (el.error.hidden) setStatus("done");
    } catch (error) {
      if (error.name === "AbortError") {
        run.stopped = true;
        setStatus("stopped");
      } else {
        showError({ message: `The request failed (${error.message}).`, code: "connection_error" });
      }
    } finally {
      run.end = performance.now();
      setRunning(null);
      showStats(run);
    }
  }

  // -- wiring -------------------------------------------------------------------------------

  el.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    loadModels();
  });
  el.key.addEventListener("change", () => {
    if (currentKey()) sessionStorage.setItem(KEY_ITEM, currentKey());
  });
  el.forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    el.key.value = "";
    setStatus("key forgotten");
  });
  el.model.addEventListener("change", showModelInfo);
  el.chatForm.addEventListener("submit", send);
  el.stop.addEventListener("click", () => {
    if (running) running.abort();
  });
  el.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) el.chatForm.requestSubmit();
  });

  $("base-url").textContent = `${window.location.origin}/v1`;
  const saved = sessionStorage.getItem(KEY_ITEM);
  if (saved) {
    el.key.value = saved;
    loadModels();
  }
})();
