"""The per-key check every model request passes: allowed model, then the key's limits.

Installed by `gateway.auth.init_app` as a `before_request` hook, so every `POST /v1/...`
route, today's and tomorrow's, gets it without doing anything: it reads the `model` of
the body (JSON, or a multipart form field), refuses a model the key may not use (404
`model_not_found`), then asks the store to admit the request (one transaction or one
Redis round trip), refusing it with OpenAI's 429s. An admitted request carries the
x-ratelimit-* headers and is settled before the client has read it to its end (a whole
answer before its body is sent, a stream once its last event went out), or at close when
the client left: Cloudflare's usage replaces the estimate (a stream cut short: what it
relayed, see `settle`).

API_KEYS keys skip all of this, as before. When the store is down a stored key verified
in the last 60 s is served without limits; one that was not gets 503 (never a 500).
"""
import time
import uuid

from flask import current_app, g, request

from gateway import jsonio
from gateway.cloudflare.catalogue import model_not_found
from gateway.errors import AuthenticationError, ServiceUnavailableError
from gateway.ops import metrics
from gateway.routes.audio import UPLOADS, upload_form
from gateway.state import limits
from gateway.state.store import StoreUnavailable, Ticket

# Longest an admitted request may hold a max_parallel slot when it never settles (a worker
# killed mid-stream): past every deadline the gateway sets on a request.
SLOT_MARGIN = 60.0


def unverifiable():
    """503 for a stored key the gateway cannot check while the store is down."""
    return ServiceUnavailableError(
        "The gateway cannot verify this API key right now; please retry shortly.",
        code="key_store_unavailable", headers={"Retry-After": "2"})


def revoked():
    return AuthenticationError("This API key has been revoked.",
                               headers={"WWW-Authenticate": "Bearer"})


def _body():
    """(model, parsed JSON body or None) of the request, read once for the route too."""
    if request.mimetype == "multipart/form-data":
        if request.endpoint not in UPLOADS:  # the JSON routes refuse a form themselves
            return None, None
        fields, _ = upload_form()  # under AUDIO_MAX_BYTES, read once for the route too
        return fields.get("model"), dict(fields.items())
    from gateway.openai.generation import read_body
    try:
        body = jsonio.loads(read_body())
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    g.json_body = body
    model = body.get("model")
    return (model if isinstance(model, str) else None), body


def _default_completion():
    """Tokens a route produces when the client sets no limit (none for embeddings and the like)."""
    path = request.path.rstrip("/")
    if path.endswith("/completions") or path.endswith("/responses"):
        return current_app.config["DEFAULT_MAX_TOKENS"]
    return 0


def limit_request():
    """before_request: model allow-list and limits of a stored key on `POST /v1/...`."""
    principal = g.get("principal")
    if principal is None or not principal.stored:
        return None
    if request.method != "POST" or not request.path.startswith("/v1/"):
        return None
    model, body = _body()
    if model and not principal.allows(model, current_app.extensions["catalogue"].aliases
                                      .target(model)):
        raise model_not_found(model)  # a pattern may name the alias or the model behind it
    config = current_app.config
    estimate = limits.estimate(body, _default_completion())
    ticket = Ticket(key_hash=principal.key_hash, name=principal.name, limits=principal.limits,
                    estimate=estimate, now=time.time(), id=uuid.uuid4().hex,
                    hold=max(config["STREAM_MAX_DURATION"], config["UPSTREAM_TOTAL_TIMEOUT"])
                    + SLOT_MARGIN)
    ring = current_app.extensions["keyring"]
    try:
        window = current_app.extensions["state"].admit(ticket)
    except StoreUnavailable:
        if not ring.trusted(principal):
            raise unverifiable() from None
        metrics.served_degraded()
        return None
    if window.refused == "revoked":
        ring.forget(principal.key_hash)
        raise revoked()
    ring.confirm(principal)
    if window.refused is not None:
        metrics.rate_limited(principal.name, window.refused)
        raise limits.refusal(principal.limits, window, ticket.now, estimate, principal.name)
    g.ticket = ticket
    g.ticket_prompt = limits.estimate(body, 0)  # the prompt's share, if Cloudflare never says
    g.ratelimit_headers = limits.headers(principal.limits, window, ticket.now, estimate)
    return None


def settle_on_close(response):
    """after_request: the headers of an admitted request, and its settlement.

    The settlement runs before the response is over for the client: at once for a whole
    answer (its usage is known by now, the body not sent yet), and for a stream once its
    last event went out, before the server sends the chunked end. A client that sends
    its next request the moment it has read this one to its end therefore finds it
    counted at its real usage rather than its estimate. A stream cut short (the client
    left, an error) is settled when its response is closed, with what was relayed.
    """
    ticket = g.get("ticket")
    if ticket is None:
        return response
    response.headers.update(g.ratelimit_headers)
    store, stats, prompt_estimate = (current_app.extensions["state"], g.get("stats"),
                                     g.ticket_prompt)
    settle_once = _Once(settle, store, ticket, stats, prompt_estimate)
    if not response.is_streamed:
        settle_once()
        return response
    if stats is not None:
        stats.when_final = settle_once
    response.call_on_close(settle_once)
    return response


class _Once:
    """`action(*args)` the first time it is called, nothing after."""

    def __init__(self, action, *args):
        self.action, self.args = action, args

    def __call__(self):
        action, self.action = self.action, None
        if action is not None:
            action(*self.args)


def settle(store, ticket, stats, prompt_estimate):
    """Charge what the request used: Cloudflare's usage for an answer that reached its end.

    A stream that did not (the client left, a write stalled, the upstream broke) is charged
    what it relayed: the content chunks written to the client plus the prompt (Cloudflare's
    count when its usage came, else the estimate), even when Cloudflare had already
    reported the whole answer: a client of an OpenAI-compatible API pays for what it
    received. Cloudflare bills the gateway for what it generated; the log line and the
    metrics show that figure.
    """
    prompt = getattr(stats, "prompt_tokens", None)
    completion = getattr(stats, "completion_tokens", None)
    if completion is None or getattr(stats, "stream_complete", None) is False:
        completion = getattr(stats, "streamed_tokens", 0)
    if prompt is None:
        prompt = prompt_estimate if completion else 0
    model = getattr(stats, "model_label", "") or ""
    try:
        store.settle(ticket, int(prompt), int(completion or 0), model)
    except StoreUnavailable:
        pass  # logged by the store; the window forgets the estimate within a minute
