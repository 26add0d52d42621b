"""The Cloudflare Workers AI client: one pooled `requests.Session` per worker process.

Proxy hygiene (after Werkzeug's http_proxy middleware): a fixed base URL from the
configuration, our own Authorization header and nothing of the client's, explicit
connect/read timeouts, redirects never followed, and every network failure mapped
to an OpenAI-shaped 502/504 without the URL (which holds the account id). Failed
attempts fail over to the next account and are retried as `gateway.cloudflare.retry` decides.
"""
import logging
import time
from dataclasses import dataclass

from urllib.parse import quote, urlencode

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from gateway import jsonio
from gateway.cloudflare import retry
from gateway.ops import metrics
from gateway.cloudflare.accounts import Account, AccountPool
from gateway.cloudflare.error_map import map_error
from gateway.cloudflare.transport import CloudflareAdapter
from gateway.errors import APIError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError

log = logging.getLogger(__name__)

MISSING_CREDENTIALS = ("The gateway has no Cloudflare credentials: set CLOUDFLARE_ACCOUNT_ID and "
                       "CLOUDFLARE_API_TOKEN (or CLOUDFLARE_ACCOUNTS) and restart it.")
CATALOGUE_PAGE_SIZE = 50
CATALOGUE_MAX_PAGES = 40
READ_SIZE = 65536  # bytes per read of a non-stream answer


@dataclass
class Answer:
    """A successful Workers AI answer: a checked JSON body, or an open SSE response."""

    account: Account
    body: dict | None = None
    stream: requests.Response | None = None  # an SSE stream, or binary bytes still to read
    data: bytes | None = None  # a whole binary answer (an image)
    content_type: str = "application/json"


class UpstreamClient:
    """Calls `/ai/run/{model}` and `/ai/models/search` on the configured Cloudflare API."""

    def __init__(self, config, store=None):
        self.base = config["CLOUDFLARE_API_BASE"].rstrip("/")
        self.pool = AccountPool(config["CLOUDFLARE_ACCOUNTS"], config["ACCOUNT_COOLDOWN"],
                                store=store)
        self.timeout = urllib3.Timeout(connect=config["UPSTREAM_CONNECT_TIMEOUT"],
                                       read=config["UPSTREAM_READ_TIMEOUT"])
        self.verify = config["UPSTREAM_CA_BUNDLE"] or True
        self.retries = config["UPSTREAM_RETRIES"]
        self.retry_after_cap = config["UPSTREAM_RETRY_AFTER_CAP"]
        self.max_body = config["UPSTREAM_MAX_BODY_BYTES"]
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or netrc from the environment
        self.adapter = CloudflareAdapter(pool_connections=4,
                                         pool_maxsize=config["UPSTREAM_POOL_SIZE"], max_retries=0)
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)

    @property
    def configured(self):
        """Whether at least one Cloudflare account is set up."""
        return len(self.pool) > 0

    def _send(self, account, method, path, *, json_body=None, params=None, stream=False,
              data=None, content_type=None):
        """One HTTP call to Cloudflare, network failures mapped to API errors.

        The body is `json_body` as JSON, or the bytes `data` sent as `content_type`
        (raw audio, a multipart form).
        """
        url = f"{self.base}/accounts/{account.account_id}/ai/{path}"
        if params:
            url = f"{url}?{urlencode(params)}"
        request = requests.PreparedRequest()
        request.method, request.url = method, url
        request.headers = CaseInsensitiveDict({"Authorization": f"Bearer {account.token}",
                                               "Accept-Encoding": "identity"})
        if json_body is not None:
            request.body = jsonio.dumps(json_body)
            request.headers["Content-Type"] = "application/json"
            request.headers["Content-Length"] = str(len(request.body))
        elif data is not None:
            request.body = data
            request.headers["Content-Type"] = content_type or "application/octet-stream"
            request.headers["Content-Length"] = str(len(data))
        try:
            # Straight to the pooled adapter: Session.request would re-parse the URL, merge
            # environment settings and run hooks on every call, a seventh of a worker's CPU
            # under load (bench/), for nothing this client uses. Redirects are not followed.
            response = self.adapter.send(request, stream=stream, timeout=self.timeout,
                                         verify=self.verify)
        except requests.ConnectTimeout:
            log.warning("connecting to Cloudflare timed out")
            raise UpstreamTimeoutError("Could not connect to Workers AI in time.",
                                       code="connect_timeout") from None
        except requests.Timeout:
            log.warning("Cloudflare did not answer in time")
            raise UpstreamTimeoutError("Workers AI did not answer in time.") from None
        except requests.RequestException as exc:
            log.warning("Cloudflare unreachable: %s", type(exc).__name__)
            raise UpstreamError("Could not reach Workers AI.",
                                code="upstream_unreachable") from None
        # Sent: the answer needs no link back to its request, whose body (the whole payload,
        # a long conversation) would otherwise be kept as long as the answer, a whole stream.
        response.request = None
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            # Asked for identity: a compressed body would be decoded behind the read
            # timeouts and size caps, so it counts as a malformed answer.
            response.close()
            log.warning("Cloudflare answered with Content-Encoding %r", encoding[:40])
            raise UpstreamError("Workers AI answered with a compressed body although the "
                                "gateway asked for none.", code="upstream_malformed")
        return response

    def check(self, response, model=None):
        """Raise the mapped error unless `response` is a 2xx (closes it when raising)."""
        if 200 <= response.status_code < 300:
            return
        try:
            body = self.read_json(response)
        except UpstreamError:
            body = None
        log.warning("Cloudflare answered HTTP %s", response.status_code)
        raise map_error(response.status_code, body, model=model, headers=response.headers,
                        secrets=self.pool.secrets)

    def read_json(self, response):
        """The whole body as JSON; UpstreamError when it is not JSON. Always closes."""
        try:
            return jsonio.loads(self._read_capped(response))
        except requests.Timeout:
            raise UpstreamTimeoutError("Workers AI went silent mid-answer.") from None
        except requests.ConnectionError as exc:
            if isinstance(exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError):
                raise UpstreamTimeoutError("Workers AI went silent mid-answer.") from None
            raise UpstreamError("The connection to Workers AI broke mid-answer.") from None
        except (ValueError, requests.RequestException):
            raise UpstreamError("Workers AI answered with an unreadable body.") from None
        finally:
            response.close()

    def _read_capped(self, response):
        """The body, refused past UPSTREAM_MAX_BODY_BYTES before it is all in memory."""
        limit = self.max_body
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise self._too_large()
        chunks, size = [], 0
        for chunk in response.iter_content(READ_SIZE):
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self):
        log.warning("Cloudflare's answer is larger than UPSTREAM_MAX_BODY_BYTES (%d)",
                    self.max_body)
        return UpstreamError("Workers AI answered with a body larger than this gateway accepts "
                             "(UPSTREAM_MAX_BODY_BYTES).", code="upstream_body_too_large")

    def call(self, attempt, deadline=None):
        """Run `attempt(account)` with failover and retries; return its result.

        An account that cannot serve (quota used up, token refused) is sidelined and the
        next one tried at once; when none is left the client gets that account's own
        error. Transient failures are retried up to UPSTREAM_RETRIES times, never past
        `deadline` (monotonic seconds).
        """
        if not self.configured:
            raise ServiceUnavailableError(MISSING_CREDENTIALS, code="cloudflare_not_configured")
        retries_left = self.retries
        sidelined = set()
        account = self.pool.acquire()
        while True:
            try:
                return attempt(account)
            except APIError as error:
                metrics.upstream_error(error)
                decision = retry.verdict(error)
                if decision in (retry.MOVE_ON, retry.OTHER_ACCOUNT):
                    if decision == retry.MOVE_ON:
                        self._sideline(account, error)
                    sidelined.add(account.position)
                elif decision != retry.RETRY or retries_left <= 0:
                    raise
                else:
                    retries_left -= 1
                    pause = retry.backoff(self.retries - retries_left, error,
                                          retry_after_cap=self.retry_after_cap)
                    if deadline is not None and time.monotonic() + pause >= deadline:
                        raise
                    log.info("retrying Workers AI in %.2f s after %s", pause, error.code)
                    time.sleep(pause)
                account = self._next_account(error, sidelined)

    def _next_account(self, error, sidelined):
        """The next healthy account, or the failed attempt's own error when none is left."""
        try:
            return self.pool.acquire(exclude=sidelined)
        except APIError:
            raise error from None

    def _sideline(self, account, error):
        if error.cf_code == 3036:
            self.pool.quota_used_up(account)
        else:
            self.pool.token_refused(account)

    def run(self, model, payload=None, stream=False, deadline=None, *, data=None,
            content_type=None, binary=False):
        """POST `/ai/run/{model}` with failover and retries; an `Answer` once one succeeded.

        A JSON answer is read and checked inside the attempt, so `success: false` on a
        200 fails over and retries like the same error on its proper status would.
        A stream request may still get JSON: some models answer it that way. With
        `binary`, an answer that is not JSON (an image, audio) is kept as bytes, or left
        open to be read as it arrives when `stream` is also set.
        """
        def attempt(account):
            response = self._send(account, "POST", f"run/{quote(model, safe='@/:+')}",
                                  json_body=payload, stream=stream, data=data,
                                  content_type=content_type)
            self.check(response, model)
            answer_type = response.headers.get("Content-Type", "")
            if stream and answer_type.startswith("text/event-stream"):
                return Answer(account=account, stream=response)
            if binary and not _is_json(answer_type):
                if stream:
                    return Answer(account=account, stream=response, content_type=answer_type)
                return Answer(account=account, data=self.read_bytes(response),
                              content_type=answer_type)
            return Answer(account=account, body=self.checked_body(response, model))
        return self.call(attempt, deadline)

    def read_bytes(self, response):
        """The whole body as bytes (at most UPSTREAM_MAX_BODY_BYTES), read failures mapped
        like `read_json`'s. Always closes."""
        try:
            return self._read_capped(response)
        except requests.Timeout:
            raise UpstreamTimeoutError("Workers AI went silent mid-answer.") from None
        except requests.RequestException:
            raise UpstreamError("The connection to Workers AI broke mid-answer.") from None
        finally:
            response.close()

    def checked_body(self, response, model=None):
        """The JSON body of a 2xx answer; Cloudflare's `success: false` raised as its error."""
        body = self.read_json(response)
        if isinstance(body, dict) and (body.get("success") is False or body.get("errors")):
            raise map_error(200, body, model=model, secrets=self.pool.secrets)
        return body

    def search_models(self, task="Text Generation"):
        """Every catalogue record of `task` (None: of every task), paging until a short or
        empty page."""
        records = []
        for page in range(1, CATALOGUE_MAX_PAGES + 1):
            params = {"page": page, "per_page": CATALOGUE_PAGE_SIZE}
            if task is not None:
                params = {"task": task, **params}
            body = self.call(lambda account, query=params: self._search_page(account, query))
            result = body.get("result") if isinstance(body, dict) else None
            if not isinstance(result, list):
                raise UpstreamError("Workers AI answered the model search with an unreadable body.")
            records.extend(r for r in result if isinstance(r, dict))
            if _last_page(body, result, len(records)):
                break
        return records

    def model_schema(self, model):
        """One model's `{"input": ..., "output": ...}` JSON schemas from `ai/models/schema`."""
        def attempt(account):
            response = self._send(account, "GET", "models/schema", params={"model": model})
            self.check(response, model)
            return self.checked_body(response, model)
        body = self.call(attempt)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("input"), dict):
            raise UpstreamError("Workers AI answered the model schema with an unreadable body.")
        output = result.get("output")
        return {"input": result["input"], "output": output if isinstance(output, dict) else {}}

    def _search_page(self, account, params):
        response = self._send(account, "GET", "models/search", params=params)
        self.check(response)
        return self.checked_body(response)


def _is_json(content_type):
    """Whether a Content-Type is JSON (Cloudflare's envelope), or absent."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return not mime or mime == "application/json" or mime.endswith("+json")


def _last_page(body, page, seen):
    """Whether paging is over: an empty page, `result_info.total_count` reached, or a short page.

    Cloudflare may cap `per_page` below what we ask for, so when it reports a total
    that total decides; only without one does a short page end the listing.
    """
    if not page:
        return True
    info = body.get("result_info")
    total = info.get("total_count") if isinstance(info, dict) else None
    if isinstance(total, int) and not isinstance(total, bool):
        return seen >= total
    return len(page) < CATALOGUE_PAGE_SIZE
