"""The Cloudflare Workers AI client: one pooled `requests.Session` per worker process.

Proxy hygiene (after Werkzeug's http_proxy middleware): a fixed base URL from the
configuration, our own Authorization header and nothing of the client's, explicit
connect/read timeouts, redirects never followed, and every network failure mapped
to an OpenAI-shaped 502/504 without the URL (which holds the account id).
"""
import logging

import requests
from requests.adapters import HTTPAdapter

from gateway import jsonio
from gateway.cloudflare_errors import map_error
from gateway.errors import ServiceUnavailableError, UpstreamError, UpstreamTimeoutError

log = logging.getLogger(__name__)

MISSING_CREDENTIALS = ("The gateway has no Cloudflare credentials: set CLOUDFLARE_ACCOUNT_ID and "
                       "CLOUDFLARE_API_TOKEN (or CLOUDFLARE_ACCOUNTS) and restart it.")
CATALOGUE_PAGE_SIZE = 50
CATALOGUE_MAX_PAGES = 40


class UpstreamClient:
    """Calls `/ai/run/{model}` and `/ai/models/search` on the configured Cloudflare API."""

    def __init__(self, config):
        self.base = config["CLOUDFLARE_API_BASE"].rstrip("/")
        self.accounts = list(config["CLOUDFLARE_ACCOUNTS"])
        self.timeout = (config["UPSTREAM_CONNECT_TIMEOUT"], config["UPSTREAM_READ_TIMEOUT"])
        self.secrets = [part for account in self.accounts for part in account]
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or netrc from the environment
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=config["UPSTREAM_POOL_SIZE"],
                              max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @property
    def configured(self):
        """Whether at least one Cloudflare account is set up."""
        return bool(self.accounts)

    def _account(self):
        if not self.accounts:
            raise ServiceUnavailableError(MISSING_CREDENTIALS, code="cloudflare_not_configured")
        return self.accounts[0]

    def _send(self, method, path, *, json_body=None, params=None, stream=False):
        """One HTTP call to Cloudflare, network failures mapped to API errors."""
        account_id, token = self._account()
        url = f"{self.base}/accounts/{account_id}/ai/{path}"
        headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
        data = None
        if json_body is not None:
            data = jsonio.dumps(json_body)
            headers["Content-Type"] = "application/json"
        try:
            return self.session.request(method, url, data=data, params=params, headers=headers,
                                        stream=stream, timeout=self.timeout,
                                        allow_redirects=False)
        except requests.Timeout:
            log.warning("Cloudflare timed out on %s", path.split("/", 1)[0])
            raise UpstreamTimeoutError("Workers AI did not answer in time.") from None
        except requests.RequestException as exc:
            log.warning("Cloudflare unreachable: %s", type(exc).__name__)
            raise UpstreamError("Could not reach Workers AI.", code="upstream_unreachable") from None

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
                        secrets=self.secrets)

    def read_json(self, response):
        """The whole body as JSON; UpstreamError when it is not JSON. Always closes."""
        try:
            return jsonio.loads(response.content)
        except (ValueError, requests.RequestException):
            raise UpstreamError("Workers AI answered with an unreadable body.") from None
        finally:
            response.close()

    def run(self, model, payload, stream=False):
        """POST `/ai/run/{model}`; returns the open response after checking its status."""
        response = self._send("POST", f"run/{model}", json_body=payload, stream=stream)
        self.check(response, model)
        return response

    def search_models(self, task="Text Generation"):
        """Every catalogue record of `task`, paging until a short or empty page."""
        records = []
        for page in range(1, CATALOGUE_MAX_PAGES + 1):
            params = {"task": task, "page": page, "per_page": CATALOGUE_PAGE_SIZE}
            response = self._send("GET", "models/search", params=params)
            self.check(response)
            body = self.read_json(response)
            result = body.get("result") if isinstance(body, dict) else None
            if not isinstance(result, list) or body.get("success") is False:
                raise UpstreamError("Workers AI answered the model search with an unreadable body.")
            records.extend(r for r in result if isinstance(r, dict))
            if _last_page(body, result, len(records)):
                break
        return records


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
