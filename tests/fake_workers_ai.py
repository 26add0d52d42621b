"""A fake Cloudflare Workers AI REST API, for tests.

Why this exists: the gateway's upstream client, its stream translator and its error mapping
must be exercised against the *real* wire formats of Workers AI (Cloudflare's REST API docs,
https://developers.cloudflare.com/api/resources/ai/ and the model pages with their JSON schemas
under https://developers.cloudflare.com/workers-ai/models/), quirks included, and
without network access.  Mocking ``requests`` cannot show how the gateway behaves with slow
streams, half-written chunked bodies, TCP resets or clients that hang up, so this is a real
HTTP/1.1 server on 127.0.0.1 (ephemeral port) running in background threads, stdlib only.

What it speaks:

* ``POST /client/v4/accounts/{account}/ai/run/{model}``: text generation for classic models
  (``{"result":{"response":...}}``, ``{"response":...,"p":...}`` SSE events) and OpenAI-shaped
  models (``chat.completion`` / ``chat.completion.chunk``), with Workers AI's input validation
  errors (5006, 5007).  The reply is deterministic: ``"Echo: " + <last user message or prompt>``.
  Directives inside that text: ``[[tokens=N]]`` (reply is ``t0 t1 ...``), ``[[delay=S]]``
  (seconds between streamed tokens for this request).
* ``GET /client/v4/accounts/{account}/ai/models/search``: the catalogue, paged and task-filtered.
* ``GET /client/v4/accounts/{account}/ai/models/schema?model=``: the model's ``{input, output}``
  JSON schemas, per model family (``tests/fake_model_families.py``); ``fake.schemas`` overrides.
* Bearer-token auth per account (401, code 10000); unknown routes give 404, code 7000.
* Injected faults (``add_fault``): error envelopes, non-JSON bodies, redirects, slow or stalled
  responses, TCP resets, malformed or error SSE events and formatting quirks.

Usage::

    with FakeWorkersAI() as fake:            # or fake = FakeWorkersAI().start(); fake.stop()
        os.environ["CLOUDFLARE_API_BASE"] = fake.base_url
        fake.add_fault("error", code=3040)   # next /ai/run answers HTTP 429, code 3040

By hand: ``python -m tests.fake_workers_ai --port 8787 --account acct-1:tok-1``.
"""
from __future__ import annotations

import argparse
import http.server
import json
import random
import re
import select
import socket
import ssl
import string
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from tests import fake_model_behaviour as behaviour
from tests import fake_media
from tests import fake_model_families as families

# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

# The models/search records served by default: 23 Text Generation models (so per_page=20 gives
# two pages) plus an embeddings and a text-to-image model that a task filter must leave out.
# Shaped like a verbatim `ai/models/search` record from Cloudflare's catalogue: string property values, a ``price``
# array, a numeric context_window for Gemma 4, no created_at on the @hf models.
DEFAULT_CATALOGUE = json.loads(
    (Path(__file__).parent / "data" / "workers_ai_catalogue.json").read_text(encoding="utf-8"))
# Then the embedding, image and speech models of tests/fake_media.py.
DEFAULT_CATALOGUE += fake_media.MEDIA_MODELS

# Models that answer in the OpenAI chat.completion shape even on /ai/run (e.g. Gemma 4; see the model's output schema on its Cloudflare model page).
OPENAI_SHAPED_MODELS = {"@cf/google/gemma-4-26b-a4b-it", "@cf/zai-org/glm-4.7-flash"}

# Top-level keys a classic text-generation model accepts (the input schema of a classic model such as @cf/meta/llama-3.1-8b-instruct).
CLASSIC_INPUT_KEYS = {
    "prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "seed",
    "repetition_penalty", "frequency_penalty", "presence_penalty", "stream", "raw", "lora",
    "response_format", "tools", "functions", "image",
}

# code -> (HTTP status, message); "{model}" is replaced by the requested model name.
ERROR_TABLE = {
    3003: (400, "Request is missing headers or body: body"),
    3006: (413, "Request is too large"),
    3007: (408, "Request timeout"),
    3008: (408, "Request was aborted"),
    3023: (403, "Service unavailable for account"),
    3036: (429, "You have used up your daily free allocation of 10,000 neurons. Please upgrade "
                "to Cloudflare's Workers Paid plan if you would like to continue usage."),
    3040: (429, "AiError: Capacity temporarily exceeded, please try again."),
    3041: (403, "The account is not allowed to access this model"),
    3042: (404, "The model name is invalid"),
    5006: (400, "AiError: Bad input: Error: oneOf at '/' not met, 0 matches: required "
                "properties at '/' are 'prompt'"),
    5007: (400, "No such model {model} or task"),
    5016: (403, "User has not agreed to Llama3.2 model terms"),
    5018: (403, "The account is not allowed to access this model"),
    5035: (403, "Model {model} is not available on the Workers Free plan."),
    7000: (404, "No route for that URI"),
    7003: (404, "Could not route to /ai/run/{model}, perhaps your object identifier is invalid?"),
    10000: (401, "Authentication error"),
}

# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

RESPONSE_FAULTS = {"error", "http500", "html", "success_false", "invalid_json", "redirect"}
STREAM_FAULTS = {"stall", "reset", "malformed_event", "error_event", "json_for_stream", "split",
                 "numeric_content", "repeat_finish", "double_done", "crlf", "slow_close"}
NON_STREAM_FAULTS = {"response_text", "unwrapped"}
FAULT_KINDS = RESPONSE_FAULTS | STREAM_FAULTS | NON_STREAM_FAULTS | {"slow_first_byte"}
_INJECTED = ("stall", "reset", "malformed_event", "error_event")  # act "after N events"


@dataclass
class Fault:
    """One queued fault: applies to matching requests until ``remaining`` uses are consumed."""
    kind: str
    remaining: int | None  # None = forever
    account: str | None
    model: str | None
    opts: dict

    def applies(self, route: str, account, model, stream: bool) -> bool:
        """True if this fault can affect a request with these properties."""
        if self.account is not None and self.account != account:
            return False
        if self.model is not None and self.model != model:
            return False
        if self.opts.get("route") not in (None, route):  # e.g. route="schema": that route only
            return False
        if route in ("search", "schema"):
            return self.kind in RESPONSE_FAULTS or self.kind == "slow_first_byte"
        if self.kind in STREAM_FAULTS:
            return stream
        if self.kind in NON_STREAM_FAULTS:
            return not stream
        return True


@dataclass
class RecordedRequest:
    """A request as the fake received it."""
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    json: Any
    account: str | None
    model: str | None


class _CIDict(dict):
    """A dict of headers with case-insensitive lookups (keys are stored lower-cased)."""

    def __init__(self, items=()):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


# --------------------------------------------------------------------------------------------
# Requests -> reply plans
# --------------------------------------------------------------------------------------------

class BadInput(Exception):
    """An input rejected the way Workers AI rejects it (HTTP status + Cloudflare error code)."""

    def __init__(self, code: int, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def error_envelope(code: int, message: str) -> dict:
    """The Cloudflare v4 error envelope as /ai/run sends it."""
    return {"errors": [{"message": message, "code": code}], "success": False, "result": {},
            "messages": []}


def _js_type(value) -> str:
    """Name a JSON value's type the way Workers AI's validator does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value),
                                                                               "object")


def _bad(detail: str) -> BadInput:
    return BadInput(5006, "AiError: Bad input: " + detail)


def _number(value, kind=int, default=None):
    """``kind(value)``, or ``default`` when value is missing or malformed."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        return default


_DIRECTIVE = re.compile(r"\s*\[\[(tokens|delay)=([^\]]*)\]\]")
_NEURONS_IN, _NEURONS_OUT = 0.00909090909090909, 0.027272727340459824


@dataclass
class ReplyPlan:
    """Everything needed to render one deterministic reply, streamed or not."""
    model: str
    openai: bool
    tokens: list
    finish: str
    prompt_tokens: int
    delay: float | None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def usage(self, extended: bool = False) -> dict:
        """Cumulative usage; ``extended`` adds the OpenAI-shaped models' extra fields."""
        done = len(self.tokens)
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                 "total_tokens": self.prompt_tokens + done}
        if extended:
            usage["prompt_tokens_details"] = {"cached_tokens": 0}
            usage["neurons"] = self.prompt_tokens * _NEURONS_IN + done * _NEURONS_OUT
        return usage


def _message_text(index: int, message, openai: bool) -> str:
    """Validate one ``messages`` item and return its text content."""
    where = f"/messages/{index}"
    if not isinstance(message, dict):
        raise _bad(f"Type mismatch of '{where}', '{_js_type(message)}' not in 'object'")
    for key in ("role", "content"):
        if key not in message and not (openai and key == "content"):
            raise _bad(f"Error: oneOf at '/' not met, 0 matches: required properties at "
                       f"'{where}' are '{key}'")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if openai and content is None:
        return ""
    if openai and isinstance(content, list):  # OpenAI content parts: keep the text ones
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    raise _bad(f"Error: oneOf at '/' not met, 0 matches: required properties at '/' are "
               f"'prompt', Type mismatch of '{where}/content', '{_js_type(content)}' not in "
               f"'string'")


def _input_texts(payload: dict, openai: bool) -> tuple[list, str]:
    """Validate ``messages`` or ``prompt``; return (all texts, the text to echo)."""
    if "messages" in payload:
        messages = payload["messages"]
        if not isinstance(messages, list):
            raise _bad(f"Type mismatch of '/messages', '{_js_type(messages)}' not in 'array'")
        texts = [_message_text(i, m, openai) for i, m in enumerate(messages)]
        users = [t for m, t in zip(messages, texts) if m.get("role") == "user"]
        return texts, users[-1] if users else ""
    if "prompt" in payload:
        prompt = payload["prompt"]
        if not isinstance(prompt, str):
            raise _bad(f"Type mismatch of '/prompt', '{_js_type(prompt)}' not in 'string'")
        if not prompt:
            raise _bad("Error: oneOf at '/' not met, 0 matches: String is too short (0 < 1) "
                       "at '/prompt', required properties at '/' are 'messages'")
        return [prompt], prompt
    raise _bad("Error: oneOf at '/' not met, 0 matches: required properties at '/' are "
               "'prompt', required properties at '/' are 'messages'")


def _check_keys(payload, openai: bool):
    """Reject what the model's input schema rejects at the top level."""
    if not isinstance(payload, dict):
        raise _bad(f"Type mismatch of '/', '{_js_type(payload)}' not in 'object'")
    extra = [k for k in payload if k not in CLASSIC_INPUT_KEYS]
    if extra and not openai:
        listed = ", ".join("/" + k for k in extra)
        raise _bad(f"Additional or unevaluated properties '{listed}' at '/' not allowed")
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise _bad(f"Type mismatch of '/stream', '{_js_type(payload['stream'])}' not in "
                   f"'boolean'")


def _check_int(payload: dict, key: str):
    """``payload[key]`` if it is an integer or absent (None); 5006 otherwise."""
    value = payload.get(key)
    if value is not None and _js_type(value) != "integer":
        raise _bad(f"Type mismatch of '/{key}', '{_js_type(value)}' not in 'integer'")
    return value


def _reply_tokens(source: str) -> list:
    """The full (untruncated) reply for the text to echo, honouring ``[[tokens=N]]``."""
    count = _number(dict(_DIRECTIVE.findall(source)).get("tokens"), int)
    if count is not None:
        return [f"{' ' if i else ''}t{i}" for i in range(count)]
    return re.findall(r"\s*\S+", "Echo: " + _DIRECTIVE.sub("", source).strip())


def build_plan(payload, model: str, record: dict | None, openai: bool,
               default_delay: float) -> ReplyPlan:
    """Validate a /ai/run body like Workers AI does and work out the deterministic reply."""
    if record is None:
        raise BadInput(5007, f"No such model {model} or task")
    if record["task"]["name"] != "Text Generation":
        raise _bad("this fake only implements Text Generation models")
    _check_keys(payload, openai)
    texts, source = _input_texts(payload, openai)
    limit = _check_int(payload, "max_tokens")
    if openai and payload.get("max_completion_tokens") is not None:
        limit = _check_int(payload, "max_completion_tokens")
    limit = 256 if limit is None else max(limit, 0)
    tokens = _reply_tokens(source)
    delay = _number(dict(_DIRECTIVE.findall(source)).get("delay"), float, default_delay)
    return ReplyPlan(model=model, openai=openai, tokens=tokens[:limit],
                     finish="length" if len(tokens) > limit else "stop",
                     prompt_tokens=sum(len(t.split()) for t in texts) + 3, delay=delay)


# --------------------------------------------------------------------------------------------
# Reply rendering
# --------------------------------------------------------------------------------------------

def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def nonstream_body(plan: ReplyPlan, faults: dict) -> dict:
    """The JSON body of a non-stream reply (classic, OpenAI-shaped or response_text)."""
    if "response_text" in faults:
        result = {"response_text": plan.text, "usage": plan.usage()}
    elif plan.openai:
        result = {
            "id": plan.id, "object": "chat.completion", "created": plan.created,
            "model": plan.model + "-external",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": plan.text,
                                                 "reasoning_content": None},
                         "finish_reason": plan.finish, "logprobs": None}],
            "usage": plan.usage(extended=True)}
    else:
        result = {"response": plan.text, "tool_calls": [], "usage": plan.usage()}
    if "unwrapped" in faults:
        return result
    return {"result": result, "success": True, "errors": [], "messages": []}


_CLASSIC_PAD = "abdefghijklmnoprstuvxyz1234567890" * 3


def _token_values(token: str, numeric: bool) -> list:
    """The JSON value(s) one token is sent as; ``numeric`` sends integers as JSON numbers
    (a leading space then goes out as its own string event, so the text stays the same)."""
    word = token.strip()
    if not (numeric and word.isdigit()):
        return [token]
    space = token[:len(token) - len(token.lstrip())]
    return ([space] if space else []) + [int(word)]


def classic_events(plan: ReplyPlan, faults: dict, rng: random.Random):
    """Yield ``(payload, is_token)`` for a classic model's stream, as Workers AI sends it (text/event-stream, `data: [DONE]` last)."""
    def pad():
        return _CLASSIC_PAD[:rng.randint(5, 60)]

    yield _dumps({"response": "", "tool_calls": [], "p": pad()}), False
    for i, token in enumerate(plan.tokens):
        for j, value in enumerate(_token_values(token, "numeric_content" in faults)):
            yield _dumps({"response": value, "tool_calls": [], "p": pad()}), j == 0
        if i % 7 == 6:  # now and then an event without a "response" key
            yield _dumps({"tool_calls": [], "p": pad()}), False
    yield _dumps({"response": "", "tool_calls": [], "p": pad()}), False
    yield _dumps({"tool_calls": [], "p": pad()}), False
    yield _dumps({"response": "", "usage": plan.usage()}), False
    yield from _done(faults)


def openai_events(plan: ReplyPlan, faults: dict, rng: random.Random):
    """Yield ``(payload, is_token)`` for an OpenAI-shaped model's stream (Gemma 4 capture)."""
    alphabet = string.ascii_lowercase + string.digits

    def chunk(choices, usage):
        return _dumps({"choices": choices, "created": plan.created, "id": plan.id,
                       "model": plan.model + "-external", "object": "chat.completion.chunk",
                       "p": "".join(rng.choices(alphabet, k=rng.randint(8, 34))),
                       "usage": usage})

    def choice(delta, finish=None, matched=None):
        return [{"delta": delta, "finish_reason": finish, "index": 0, "logprobs": None,
                 "matched_stop": matched}]

    def usage(prompt, completion, neurons):
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": 0},
                "neurons": neurons}

    yield chunk(choice({"content": "", "reasoning_content": None, "role": "assistant"}),
                usage(plan.prompt_tokens, 0, plan.prompt_tokens * _NEURONS_IN)), False
    for token in plan.tokens:
        for j, value in enumerate(_token_values(token, "numeric_content" in faults)):
            yield chunk(choice({"content": value, "reasoning_content": None}),
                        usage(0, 1, _NEURONS_OUT)), j == 0
    matched = 106 if plan.finish == "stop" else None
    finish = chunk(choice({"reasoning_content": None}, plan.finish, matched), usage(0, 0, 0))
    for _ in range(2 if "repeat_finish" in faults else 1):
        yield finish, False
    yield chunk([], usage(0, 1, _NEURONS_OUT)), False
    yield _dumps({"response": "", "usage": plan.usage(extended=True)}), False
    yield from _done(faults)


def _done(faults: dict):
    for _ in range(2 if "double_done" in faults else 1):
        yield "[DONE]", False


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------

class _ClientGone(Exception):
    """The client closed the connection (or the server is stopping) mid-response."""


class _Server(http.server.ThreadingHTTPServer):
    """Threaded HTTP server that tracks its open client connections."""
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 2048

    def __init__(self, address, fake: FakeWorkersAI):
        self.fake = fake
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        self.fake._connection_opened(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        try:
            super().shutdown_request(request)
        finally:
            self.fake._connection_closed(request)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, _ClientGone)):
            super().handle_error(request, client_address)


_RUN_PATH = re.compile(r"^/client/v4/accounts/([^/]+)/ai/run/(.+)$")
_SEARCH_PATH = re.compile(r"^/client/v4/accounts/([^/]+)/ai/models/search/?$")
_SCHEMA_PATH = re.compile(r"^/client/v4/accounts/([^/]+)/ai/models/schema/?$")
_NO_ROUTE = {"success": False, "errors": [{"code": 7000, "message": "No route for that URI"}],
             "messages": [], "result": None}
_AUTH_ERROR = {"result": None, "success": False,
               "errors": [{"code": 10000, "message": "Authentication error"}], "messages": []}
_HTML_PAGE = ("<!DOCTYPE html>\n<html><head><title>{status} Bad Gateway | cloudflare</title>"
              "</head>\n<body><h1>Error {status}</h1><p>Bad gateway</p>"
              "<p>Cloudflare Ray ID: 8f1c2a3b4d5e6f70</p></body></html>\n")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes one connection's requests to the fake's behaviour."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self):
        return "cloudflare"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    do_PUT = do_PATCH = do_DELETE = do_POST  # all 404

    # -- plumbing ----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked) so keep-alive stays in sync."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, content_type: str | None, headers=None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, obj, headers=None):
        self._send(status, _dumps(obj).encode(), "application/json", headers)

    def _client_gone(self) -> bool:
        """True if the client has closed or reset the connection (peeks, never consumes)."""
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except ValueError:
            return False  # TLS sockets cannot peek: the next write tells
        except OSError:
            return True

    def _pause(self, seconds: float):
        """Sleep, but raise _ClientGone as soon as the client hangs up or the fake stops."""
        deadline = time.monotonic() + seconds
        poller = select.poll()  # not select.select(): it fails on descriptors >= 1024
        poller.register(self.connection, select.POLLIN | select.POLLPRI)
        while (remaining := deadline - time.monotonic()) > 0:
            if self.server.fake._stopping.is_set():
                raise _ClientGone()
            if poller.poll(min(remaining, 0.25) * 1000):
                if self._client_gone():
                    raise _ClientGone()
                time.sleep(min(remaining, 0.01))  # pipelined bytes: nothing to watch for

    # -- routing -----------------------------------------------------------------------------

    def _dispatch(self):
        fake = self.server.fake
        body = self._body = self._read_body()
        url = urlsplit(self.path)
        path = unquote(url.path)
        run, search = _RUN_PATH.match(path), _SEARCH_PATH.match(path)
        schema = _SCHEMA_PATH.match(path)
        account = (run or search or schema).group(1) if (run or search or schema) else None
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        fake._record(RecordedRequest(
            method=self.command, path=path, query=query, headers=_CIDict(self.headers.items()),
            body=body, json=parsed, account=account, model=run.group(2) if run else None))
        try:
            if run and self.command == "POST":
                self._guarded(account, lambda: self._run(account, run.group(2), parsed))
            elif search and self.command == "GET":
                self._guarded(account, lambda: self._search(account, query))
            elif schema and self.command == "GET":
                self._guarded(account, lambda: self._schema(account, query.get("model")))
            else:
                self._send_json(404, _NO_ROUTE)
        except (_ClientGone, ConnectionError):
            self.close_connection = True

    def _guarded(self, account, handler: Callable[[], None]):
        """Check the Bearer token for ``account`` before running ``handler``."""
        fake = self.server.fake
        token = fake.accounts.get(account)
        if token is None or self.headers.get("Authorization") != f"Bearer {token}":
            self._send_json(401, _AUTH_ERROR)
        else:
            handler()

    def _before_response(self, faults: dict, model=None) -> bool:
        """Apply first-byte delays, then any response-replacing fault; True if one was sent."""
        delay = self.server.fake.first_byte_delay
        if "slow_first_byte" in faults:
            delay += faults["slow_first_byte"].get("delay", 1.0)
        if delay > 0:
            self._pause(delay)
        kind = next((k for k in faults if k in RESPONSE_FAULTS), None)
        if kind is not None:
            self._send_fault(kind, faults[kind], model)
        return kind is not None

    def _send_fault(self, kind: str, opts: dict, model):
        """Answer with a response-replacing fault instead of the real reply."""
        if kind == "error":
            code = opts.get("code", 3040)
            status, message = ERROR_TABLE.get(code, (400, "Error"))
            message = opts.get("message", message.replace("{model}", model or ""))
            body = opts.get("body", error_envelope(code, message))
            raw = body.encode() if isinstance(body, str) else _dumps(body).encode()
            self._send(opts.get("status", status), raw, "application/json", opts.get("headers"))
        elif kind == "http500":
            self._send(opts.get("status", 500), b"Internal Server Error", "text/plain")
        elif kind == "html":
            status = opts.get("status", 502)
            self._send(status, _HTML_PAGE.format(status=status).encode(),
                       "text/html; charset=UTF-8")
        elif kind == "success_false":
            self._send_json(200, {"success": False, "result": None,
                                  "errors": [{"code": 5000, "message": "Something failed"}]})
        elif kind == "invalid_json":
            body = opts.get("body", '{"result":{"response":"Echo: trunc')
            self._send(200, body.encode() if isinstance(body, str) else body, "application/json")
        elif kind == "redirect":
            self._send(opts.get("status", 302), b"", None,
                       {"Location": opts.get("location", "http://127.0.0.1:1/elsewhere")})

    def _search(self, account, query: dict):
        fake = self.server.fake
        if self._before_response(fake._take_faults("search", account, None, False)):
            return
        records = [m for m in fake.models
                   if not query.get("task") or m["task"]["name"] == query["task"]]
        if query.get("search"):
            records = [m for m in records if query["search"].lower() in m["name"].lower()]
        page = max(_number(query.get("page"), int, 1), 1)
        per_page = min(max(_number(query.get("per_page"), int, 20), 1), 50)
        items = records[(page - 1) * per_page:page * per_page]
        self._send_json(200, {"success": True, "result": items, "errors": [], "messages": [],
                              "result_info": {"page": page, "per_page": per_page,
                                              "count": len(items),
                                              "total_count": len(records)}})

    def _schema(self, account, model):
        fake = self.server.fake
        if self._before_response(fake._take_faults("schema", account, model, False), model):
            return
        found = fake.schema_for(model)
        if found is None:
            self._send_json(400, error_envelope(5007, f"No such model {model} or task"))
            return
        self._send_json(200, {"success": True, "result": found, "errors": [], "messages": []})

    def _run(self, account, model, payload):
        fake = self.server.fake
        stream = isinstance(payload, dict) and payload.get("stream") is True
        faults = fake._take_faults("run", account, model, stream)
        if self._before_response(faults, model):
            return
        record = fake._by_name.get(model)
        if record is not None and record["task"]["name"] != "Text Generation":
            self._media(record, model, payload)
            return
        if record is not None and behaviour.wanted(payload) and model not in fake.schemas:
            self._run_family(model, payload, stream, faults)
            return
        try:
            plan = build_plan(payload, model, fake._by_name.get(model),
                              model in fake.openai_shaped, fake.token_delay)
        except BadInput as exc:
            self._send_json(exc.status, error_envelope(exc.code, exc.message))
            return
        if stream and "json_for_stream" not in faults:
            _StreamResponse(self, plan, faults).send()
        else:
            self._send_json(200, nonstream_body(plan, faults))

    def _run_family(self, model, payload, stream, faults):
        """A request using a model family's features (tests/fake_model_behaviour.py)."""
        fake = self.server.fake
        try:
            result = behaviour.answer(model, payload, stream, fake.openai_shaped)
        except behaviour.Refusal as exc:
            self._send_json(exc.status, error_envelope(exc.code, exc.message))
            return
        if not stream:
            self._send_json(200, result)
            return
        plan = ReplyPlan(model=model, openai=False, tokens=[], finish="stop", prompt_tokens=0,
                         delay=fake.token_delay)
        _StreamResponse(self, plan, faults, events=[(e, True) for e in result]).send()

    def _media(self, record, model, payload):
        """Embeddings, images and speech (tests/fake_media.py): JSON, or raw bytes in chunks."""
        content_type = self.headers.get("Content-Type", "")
        body = self._body
        try:
            reply = fake_media.answer(record, model, payload, body, content_type)
        except fake_media.MediaError as exc:
            self._send_json(exc.status, error_envelope(exc.code, exc.message))
            return
        if reply.chunks is None:
            self._send(200, fake_media.run_body(reply.result), "application/json")
            return
        self.send_response(200)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, chunk in enumerate(reply.chunks):
            if index == self.server.fake.cut_binary_after:  # a broken answer: RST mid-body
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                raise _ClientGone()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            if self.server.fake.token_delay:
                self._pause(self.server.fake.token_delay)
        self.wfile.write(b"0\r\n\r\n")


class _StreamResponse:
    """Writes one SSE stream as HTTP chunks, applying stream faults and quirks."""

    def __init__(self, handler: _Handler, plan: ReplyPlan, faults: dict, events=None):
        self.handler, self.plan, self.faults = handler, plan, faults
        self.events = events  # ready-made (payload, is_token) pairs instead of the plan's
        self.fake = handler.server.fake
        self.events_sent = 0
        self.eol = "\r\n" if "crlf" in faults else "\n"
        self.split_rng = random.Random(faults["split"].get("seed", 0)) if "split" in faults \
            else None
        self.pending = [k for k in _INJECTED if k in faults]
        self.completed = False

    def send(self):
        """Send headers and every event; count the stream as completed or aborted."""
        handler = self.handler
        render = openai_events if self.plan.openai else classic_events
        events = self.events if self.events is not None else \
            list(render(self.plan, self.faults, random.Random(self.plan.id)))
        self.fake._count("streams_started")
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Cache-Control", "no-cache")
            handler.end_headers()
            for index, (payload, is_token) in enumerate(events):
                if self._inject_due() == "end":
                    break
                if is_token and self.plan.delay:
                    handler._pause(self.plan.delay)
                if index == len(events) - 1:
                    self._mark_completed()
                self._event(payload)
        except (_ClientGone, OSError):
            handler.close_connection = True
            if self.completed:
                self.fake._count("streams_completed", -1)
            self.fake._count("streams_aborted")
            return
        try:
            if "slow_close" in self.faults:  # [DONE] went out; the body's end comes later
                handler._pause(self.faults["slow_close"].get("delay", 1.0))
            handler.wfile.write(b"0\r\n\r\n")  # last chunk: the body is complete
            handler.wfile.flush()
            self.fake._count("bodies_ended")
        except (OSError, _ClientGone):  # the client had every event already: still completed
            handler.close_connection = True

    def _mark_completed(self):
        """Count the stream as completed *before* its last event goes out, so a client that
        has read the whole stream always sees the counter already updated."""
        self.completed = True
        self.fake._count("streams_completed")

    def _write(self, data: bytes):
        """Send bytes as one HTTP chunk, at once (or as many 1-7 byte chunks under "split")."""
        pieces = [data]
        if self.split_rng:
            pieces, i = [], 0
            while i < len(data):
                step = self.split_rng.randint(1, 7)
                pieces.append(data[i:i + step])
                i += step
        for piece in pieces:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.handler.wfile.flush()

    def _event(self, payload: str):
        self._write(f"data: {payload}{self.eol}{self.eol}".encode())
        self.events_sent += 1

    def _inject_due(self) -> str | None:
        """Run injected faults whose ``after`` count is reached; "end" stops the stream."""
        for kind in list(self.pending):
            opts = self.faults[kind]
            if self.events_sent != opts.get("after", 2):
                continue
            self.pending.remove(kind)
            if kind == "stall":
                self.handler._pause(opts.get("delay", 30.0))
            elif kind == "malformed_event":
                self._write(f"data: {{not json{self.eol}{self.eol}".encode())
            elif kind == "error_event":
                self._mark_completed()
                self._event(_dumps({"error": {"message": "No capacity", "code": 3040},
                                    "success": False}))
                return "end"
            elif kind == "reset":
                self._reset()
        return None

    def _reset(self):
        """Abort the TCP connection with a RST, leaving the chunked body unfinished."""
        sock = self.handler.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.handler.rfile.close()  # drop the makefile() reference so close() is immediate
        sock.close()
        raise _ClientGone()


# --------------------------------------------------------------------------------------------
# Public fixture object
# --------------------------------------------------------------------------------------------

class FakeWorkersAI:
    """A fake Workers AI REST API on 127.0.0.1; see the module docstring.

    Attributes a test reads or sets: ``base_url``, ``port``, ``requests`` (every request,
    including 401s and 404s, as a ``RecordedRequest``, recorded before it is answered),
    ``token_delay`` / ``first_byte_delay`` (seconds; ``token_delay`` also paces the chunks of
    binary answers), ``cut_binary_after`` (reset a binary answer after that many chunks),
    ``accounts``, ``models``; counters
    ``open_connections``, ``connections_total`` (TCP connections accepted so far),
    ``streams_started``, ``streams_completed`` (the server wrote the whole stream, including
    the ``error_event`` fault's short one) and ``streams_aborted`` (the client went away, or
    the ``reset`` fault fired).  ``streams_completed`` is counted just before the last event
    is sent; an abort is noticed a little after the client leaves, so use ``wait_for``.

    ``add_fault(kind, times=1, account=None, model=None, **opts)`` kinds, with their opts:

    * replace the response (/ai/run and models/search): ``error`` (``code`` default 3040;
      ``status``, ``message`` default from ERROR_TABLE; ``headers``; ``body`` to send instead
      of the envelope), ``http500`` (``status``), ``html`` (``status`` default 502),
      ``success_false``, ``invalid_json`` (``body``), ``redirect`` (``status`` default 302,
      ``location``);
    * ``slow_first_byte`` (``delay`` seconds before the headers, default 1.0; any request);
    * non-stream requests only: ``response_text`` (``result.response_text`` shape),
      ``unwrapped`` (the result object without the ``{"result": ...}`` envelope);
    * stream requests only: ``stall`` (``after`` events, default 2, pause ``delay`` seconds,
      default 30), ``reset`` (TCP RST after ``after`` events), ``malformed_event`` (a
      ``data: {not json`` event after ``after`` events), ``error_event`` (an error event after
      ``after`` events, then the end of the body without ``[DONE]``), ``json_for_stream``
      (the non-stream JSON reply), ``split`` (1-7 byte chunks; ``seed``), ``numeric_content``
      (integer tokens sent as JSON numbers), ``repeat_finish`` (OpenAI-shaped finish chunk
      twice), ``double_done``, ``crlf``, ``slow_close`` (``delay`` seconds, default 1.0,
      between ``[DONE]`` and the end of the chunked body; ``bodies_ended`` counts the stream
      bodies whose end was written).

    A request takes at most one fault of each kind, in the order they were added, and at most
    one response-replacing fault (with which only ``slow_first_byte`` is also taken).  A fault
    that cannot apply to a request (a stream fault, a non-stream request) is not used up.
    """

    def __init__(self, accounts=None, models=None, openai_shaped=None, host="127.0.0.1",
                 port=0, tls=None, schemas=None):
        self.accounts = dict(accounts or {"acct-1": "tok-1"})
        self.models = list(models if models is not None else DEFAULT_CATALOGUE)
        self.openai_shaped = set(OPENAI_SHAPED_MODELS if openai_shaped is None
                                 else openai_shaped)
        self._by_name = {m["name"]: m for m in self.models}
        self.schemas = dict(schemas or {})  # model -> {input, output}: overrides the families
        self._address = (host, port)
        self._tls = tls  # (certfile, keyfile): serve HTTPS, as Cloudflare does
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set = set()
        self._faults: list[Fault] = []
        self._server = None
        self._thread = None
        self.requests: list[RecordedRequest] = []
        self.connections_total = 0
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeWorkersAI:
        """Bind the port and serve in a background thread."""
        self._stopping.clear()
        self._server = _Server(self._address, self)
        if self._tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="fake-workers-ai", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and drop every open connection (stalled streams end promptly)."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What CLOUDFLARE_API_BASE should be set to."""
        host = self._address[0] if self._address[0] not in ("", "0.0.0.0") else "127.0.0.1"
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{host}:{self.port}/client/v4"

    # -- test controls -----------------------------------------------------------------------

    def reset(self):
        """Clear faults, recorded requests and stream counters; restore default delays."""
        with self._lock:
            self._faults.clear()
            del self.requests[:]
            self.token_delay = 0.0
            self.first_byte_delay = 0.0
            self.cut_binary_after = None  # binary answers (images, speech): chunks before a reset
            self.streams_started = self.streams_completed = self.streams_aborted = 0
            self.bodies_ended = 0

    def add_fault(self, kind: str, times: int | None = 1, account=None, model=None, **opts):
        """Queue a fault for the next ``times`` matching requests (None = forever)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        with self._lock:
            self._faults.append(Fault(kind, times, account, model, opts))

    def wait_for(self, predicate: Callable[[FakeWorkersAI], bool], timeout=10.0) -> bool:
        """Poll ``predicate(self)`` until it is true or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def schema_for(self, model):
        """The ``{input, output}`` schema served for ``model`` (None: not in the catalogue)."""
        if model in self.schemas:
            return self.schemas[model]
        record = self._by_name.get(model)
        if record is None:
            return None
        if record["task"]["name"] != "Text Generation":
            return fake_media.SCHEMAS.get(model)
        return families.schema_of(model, self.openai_shaped)

    @property
    def open_connections(self) -> int:
        """TCP connections currently open to the fake."""
        with self._lock:
            return len(self._sockets)

    # -- used by the server threads ----------------------------------------------------------

    def _take_faults(self, route: str, account, model, stream: bool) -> dict:
        """Consume the faults for one request: kind -> opts.

        At most one fault per kind, and at most one response-replacing kind (the first added);
        if one is taken, only ``slow_first_byte`` is taken alongside it.
        """
        chosen: dict[str, Fault] = {}
        with self._lock:
            for fault in self._faults:
                if fault.kind in chosen or not fault.applies(route, account, model, stream):
                    continue
                if fault.kind in RESPONSE_FAULTS and any(k in RESPONSE_FAULTS for k in chosen):
                    continue
                chosen[fault.kind] = fault
            if any(k in RESPONSE_FAULTS for k in chosen):
                chosen = {k: f for k, f in chosen.items()
                          if k in RESPONSE_FAULTS or k == "slow_first_byte"}
            for fault in chosen.values():
                if fault.remaining is not None:
                    fault.remaining -= 1
            self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        return {kind: fault.opts for kind, fault in chosen.items()}

    def _record(self, request: RecordedRequest):
        with self._lock:
            self.requests.append(request)

    def _count(self, name: str, delta: int = 1):
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def _connection_opened(self, sock):
        with self._lock:
            self._sockets.add(sock)
            self.connections_total += 1

    def _connection_closed(self, sock):
        with self._lock:
            self._sockets.discard(sock)


def main(argv=None):
    """Serve the fake forever (for trying the gateway by hand)."""
    parser = argparse.ArgumentParser(description="Fake Cloudflare Workers AI REST API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--account", action="append", default=[], metavar="ID:TOKEN",
                        help="an account and its API token (repeatable; default acct-1:tok-1)")
    parser.add_argument("--token-delay", type=float, default=0.0,
                        help="seconds between streamed tokens")
    args = parser.parse_args(argv)
    accounts = dict(a.split(":", 1) for a in args.account) or None
    fake = FakeWorkersAI(accounts=accounts, host=args.host, port=args.port).start()
    fake.token_delay = args.token_delay
    print(f"Fake Workers AI on {fake.base_url} (accounts: {', '.join(fake.accounts)})",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
