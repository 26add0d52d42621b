"""What chat and text completions share: parse, validate, call Workers AI, answer.

The routes stay thin: each names its schema, its payload builder and its response
builder, and this module does the rest in the same order for both, so that nothing
reaches Cloudflare before the request has been fully checked.
"""
import time
from contextlib import contextmanager

import gevent
from flask import Response, current_app, g, request, stream_with_context
from gevent import monkey
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from gateway import jsonio
from gateway.cloudflare.catalogue import TEXT_GENERATION
from gateway.openai import features, translate, vision
from gateway.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from gateway.ops.request_log import current_stats
from gateway.openai.legacy_functions import LegacyFunctionStream, legacy_completion
from gateway.openai.stream_translate import StreamTranslator
from gateway.openai.streaming import relay, replay

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _first_error(messages, path=""):
    """The param path and text of the first marshmallow error, e.g. `messages[0].role`."""
    if isinstance(messages, dict):
        key, value = next(iter(messages.items()))
        if key == "_schema":
            return _first_error(value, path)
        step = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else key)
        return _first_error(value, path + step)
    if isinstance(messages, list) and messages:
        return _first_error(messages[0], path)
    return path or None, str(messages)


def parse_body():
    """The request body as a JSON object, whatever Content-Type the client claimed."""
    if request.mimetype == "multipart/form-data":
        raise InvalidRequestError("The request body must be JSON, not multipart form data.")
    raw = read_body()
    body = g.get("json_body")  # parsed already by the per-key check (gateway.state.guard)
    if body is None:
        if not raw.strip():
            raise InvalidRequestError("The request body is empty; send a JSON object.")
        try:
            body = jsonio.loads(raw)
        except ValueError:
            raise InvalidRequestError("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
    if jsonio.nested_too_deep(raw, body):
        raise InvalidRequestError(f"The request body is nested more than {jsonio.MAX_DEPTH} "
                                  "levels deep.")
    return body


def read_body():
    """The raw body, read once per request: the per-key check and the route share it."""
    raw = g.get("raw_body")
    if raw is None:
        raw = g.raw_body = _read_body()
    return raw


def _read_body():
    """The raw body; 413 above the limit also for chunked bodies, which carry no length.

    The limit is MAX_CONTENT_LENGTH unless the route set its own on
    `request.max_content_length` (the audio uploads). Werkzeug silently cuts a
    length-less body at the limit, so such a body is read straight from the server
    (gunicorn decodes the chunks) and measured here.
    """
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    limit = request.max_content_length
    raw = request.environ["wsgi.input"].read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    return raw


# OpenAI's own limit on `tools` (and legacy `functions`) in one request.
MAX_TOOLS = 128


def check_counts(body):
    """Refuse oversized message and tool lists before marshmallow spends a worker's time on
    them.

    Validation costs tens of microseconds per message or tool and blocks every stream of the
    worker meanwhile; OpenAI itself caps `messages` at 2,048 items and `tools` at 128.
    """
    for name in ("tools", "functions"):
        listed = body.get(name)
        if isinstance(listed, list) and len(listed) > MAX_TOOLS:
            raise InvalidRequestError(
                f"Invalid '{name}': array too long. Expected an array with maximum length "
                f"{MAX_TOOLS}, but got an array with length {len(listed)} instead.",
                param=name, code="array_above_max_length")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    config = current_app.config
    if len(messages) > config["MAX_MESSAGES"]:
        raise InvalidRequestError(
            f"Invalid 'messages': array too long. Expected an array with maximum length "
            f"{config['MAX_MESSAGES']}, but got an array with length {len(messages)} instead.",
            param="messages", code="array_above_max_length")
    parts = sum(len(message["content"]) for message in messages
                if isinstance(message, dict) and isinstance(message.get("content"), list))
    if parts > config["MAX_CONTENT_PARTS"]:
        raise InvalidRequestError(
            f"Invalid 'messages': {parts} content parts in all; this gateway accepts at most "
            f"{config['MAX_CONTENT_PARTS']} (MAX_CONTENT_PARTS).",
            param="messages", code="array_above_max_length")


def validate(schema, body):
    """Load `body` with `schema`; the first error becomes a 400 naming its field."""
    try:
        return schema.load(body)
    except ValidationError as exc:
        param, message = _first_error(exc.messages)
        text = f"Invalid value for '{param}': {message}" if param else message
        raise InvalidRequestError(text, param=param) from None


def _check_length(data):
    limit = current_app.config["MAX_INPUT_CHARS"]
    if translate.input_chars(data) > limit:
        param = "prompt" if "prompt" in data else "messages"
        raise InvalidRequestError(
            f"The input is {translate.input_chars(data)} characters long; this gateway accepts "
            f"at most {limit}.", param=param, code="context_length_exceeded")


def generate(kind, schema, build_payload, build_response, body=None):
    """Serve one chat or text completion request, streamed or not (`body`: a dict instead of
    the HTTP body, for routes that drive this pipeline with a chat-shaped request)."""
    if body is None:
        body = parse_body()
    check_counts(body)
    data = validate(schema, body)
    legacy = data.get("legacy_functions")  # answered as function_call, as the client reads
    if data["stream"]:
        return stream(kind, data, build_payload, LegacyFunctionStream if legacy else None)
    answer = complete(data, build_payload, build_response)
    return jsonio.json_response(legacy_completion(answer) if legacy else answer)


def _admit(data):
    """Checks and bookkeeping every generation request passes before it goes upstream.

    Returns the request's stats and Workers AI's name for its model (an alias resolved).
    """
    stats = current_stats()
    stats.model, stats.stream = data["model"], data["stream"]
    _check_length(data)
    return stats, resolve_model(data["model"], TEXT_GENERATION, fetch=False).name


def resolve_model(requested, task, fetch=True):
    """The requested model (or alias) checked for this route's task: a catalogue `Resolved`.

    The metrics label is set only for a confirmed name, so clients cannot add labels.
    """
    resolved = current_app.extensions["catalogue"].resolve(requested, task, request.path,
                                                           fetch=fetch)
    if resolved.confirmed:
        current_stats().model_label = requested
    return resolved


def _prepare(data, build_payload, model):
    """(payload, Plan): the plain payload, and beyond plain text what the model's own schema
    allows (gateway/openai/features.py); plain text requests never look the schema up.
    `model` is Workers AI's name (an alias resolved)."""
    payload = build_payload(data, current_app.config["DEFAULT_MAX_TOKENS"])
    if not features.needs_schema(data):
        return payload, features.PLAIN
    extensions = current_app.extensions
    capabilities = extensions["model_schemas"].capabilities(model)
    return features.apply(data, payload, capabilities, data["model"],
                          _image_inliner(current_app.config, extensions))


def _image_inliner(config, extensions):
    """`messages -> messages` with image URLs fetched as data URLs (as IMAGE_FETCH allows)."""
    def inline(messages):
        fetcher = extensions["image_fetcher"]
        return vision.inline_images(messages, fetcher.fetch, config["IMAGE_FETCH"])
    return inline


def complete(data, build_payload, build_response):
    """The answer to a validated non-stream request, as the API's response dict."""
    stats, model = _admit(data)
    config = current_app.config
    default_max = config["DEFAULT_MAX_TOKENS"]
    payload, plan = _prepare(data, build_payload, model)
    deadline = time.monotonic() + config["UPSTREAM_TOTAL_TIMEOUT"]
    with time_limit(config["UPSTREAM_TOTAL_TIMEOUT"]):
        answer = current_app.extensions["upstream"].run(model, payload, deadline=deadline)
    reply = features.finish_reply(_reply_of(answer, stats), plan)
    return build_response(reply, model=data["model"],
                          max_tokens=translate.max_tokens_of(data, default_max))


def stream(kind, data, build_payload, adapt=None):
    """The SSE response to a validated stream request.

    `adapt` wraps the chat translator to speak another API's stream events over the
    same relay (the Responses API does this); the default sends chat or completion chunks.
    """
    stats, model = _admit(data)
    config = current_app.config
    default_max = config["DEFAULT_MAX_TOKENS"]
    payload, plan = _prepare(data, build_payload, model)
    upstream = current_app.extensions["upstream"]
    answer = upstream.run(model, payload, stream=not plan.replay)
    options = data.get("stream_options") or {}
    translator = StreamTranslator(kind, model=data["model"],
                                  max_tokens=translate.max_tokens_of(data, default_max),
                                  include_usage=options.get("include_usage", False),
                                  stops=plan.stops)
    if adapt is not None:
        translator = adapt(translator)
    if answer.stream is None:
        if not _readable(answer.body):  # e.g. GPT-OSS: no stream on /ai/run, an empty result
            answer = upstream.run(model, {**payload, "stream": False})
        reply = features.finish_reply(_reply_of(answer, stats), plan)
        stats.first_byte()
        stats.first_token()
        return Response(replay(reply, translator), mimetype="text/event-stream",
                        headers=STREAM_HEADERS)
    _note_account(answer, stats)
    # The request context lives as long as the stream: let go of the client's body (raw and
    # parsed, a whole conversation) now that its payload went upstream.
    g.pop("raw_body", None)
    g.pop("json_body", None)
    events = relay(answer.stream, translator, heartbeat=config["STREAM_HEARTBEAT"],
                   idle_timeout=config["UPSTREAM_READ_TIMEOUT"],
                   max_duration=config["STREAM_MAX_DURATION"],
                   client_socket=request.environ.get("gunicorn.socket"), stats=stats)
    return Response(stream_with_context(events), mimetype="text/event-stream",
                    headers=STREAM_HEADERS)


def _note_account(answer, stats):
    stats.account, stats.upstream_status = answer.account.position, 200


def _readable(body):
    try:
        translate.read_reply(body)
    except translate.UnreadableReply:
        return False
    return True


def _reply_of(answer, stats):
    """The Reply in a checked JSON answer; a shape the gateway cannot read is never a 200."""
    _note_account(answer, stats)
    try:
        reply = translate.read_reply(answer.body)
    except translate.UnreadableReply:
        raise UpstreamError("Workers AI answered with a body the gateway could not read.") from None
    stats.usage(reply.usage)
    return reply


@contextmanager
def time_limit(seconds):
    """A wall-clock limit on a whole non-stream request (gevent workers only).

    requests' timeouts are per socket operation, so a trickling upstream could hold a
    request forever; under gevent a Timeout interrupts whatever the greenlet waits on.
    """
    if not monkey.is_module_patched("socket"):
        yield
        return
    error = UpstreamTimeoutError("Workers AI did not finish answering in time.")
    with gevent.Timeout(seconds, error):
        yield
