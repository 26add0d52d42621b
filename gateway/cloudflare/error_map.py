"""Map Cloudflare's answers (HTTP status + v4 envelope `errors[].code`) to OpenAI errors.

The status a client sees drives its SDK's retry policy, so the mapping is deliberate:
Cloudflare refusing *our* token is a 502 (the client's key was fine), a used-up daily
allocation is a 429 the SDK must not retry, capacity errors are retryable 429s.
Codes come from Cloudflare's published error table; 3040 rides on any status, so the
code wins over the status.
"""
from gateway.errors import (APIError, InvalidRequestError, NotFoundError, QuotaExceededError,
                            RateLimitError, UpstreamError, UpstreamTimeoutError)

TOKEN_REFUSED = 10000
QUOTA_USED_UP = 3036
OUT_OF_CAPACITY = 3040
MODEL_MISSING = {5007, 3042, 7000, 7003}
TOO_LARGE = 3006
TIMED_OUT = {3007, 3008}
# The codes of Cloudflare's Workers AI error table (developers.cloudflare.com/workers-ai/
# platform/errors/) and the API's own auth, routing and validation codes seen from /ai/run.
# Metrics label these by number and any other code "other", so that an upstream sending
# new codes cannot grow the label set without bound.
KNOWN_CODES = frozenset({3003, 3006, 3007, 3008, 3023, 3036, 3039, 3040, 3041, 3042, 4006,
                         5004, 5005, 5006, 5007, 5016, 5018, 5019, 5035, 7000, 7003, 9109,
                         10000})


def code_label(code):
    """A bounded metrics label for a Cloudflare error code: the code, "" or "other"."""
    if code is None:
        return ""
    return str(code) if code in KNOWN_CODES else "other"


def error_code(body):
    """Cloudflare's numeric error code from a v4 envelope or an error event, else None."""
    if not isinstance(body, dict):
        return None
    candidates = []
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        candidates.append(errors[0].get("code"))
    error = body.get("error")
    if isinstance(error, dict):
        candidates.append(error.get("code"))
    candidates.append(body.get("internalCode"))
    for code in candidates:
        try:
            number = int(code)
        except (TypeError, ValueError):
            continue
        if 0 <= number < 10**9:  # a code, not a 40-digit number that logs and labels choke on
            return number
    return None


def error_message(body):
    """Cloudflare's own error text, else None."""
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        message = errors[0].get("message")
        if isinstance(message, str):
            return message
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return None


def scrub(text, secrets):
    """Remove account ids and tokens from a text that Cloudflare wrote."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def map_error(status, body, *, model=None, headers=None, secrets=()):
    """The APIError to raise for a failed Workers AI answer (`body` parsed JSON or None).

    The error keeps Cloudflare's status and code (`upstream_status`, `cf_code`), which
    the retry and failover logic reads.
    """
    error = _map(status, body, model, headers, secrets)
    retry_after = (headers or {}).get("Retry-After")
    if retry_after:
        error.headers.setdefault("Retry-After", retry_after)
    error.upstream_status = status
    error.cf_code = error_code(body)
    return error


def _map(status, body, model, headers, secrets):
    code = error_code(body)
    cf_message = scrub(error_message(body) or "", secrets)
    retry_after = (headers or {}).get("Retry-After")
    extra = {"Retry-After": retry_after} if retry_after else {}
    if code == TOKEN_REFUSED or status in (401, 403):
        specific = code not in (None, TOKEN_REFUSED) and cf_message
        detail = f" Cloudflare said: {cf_message}" if specific else ""
        return UpstreamError(
            "Cloudflare refused the gateway's own Workers AI credentials (CLOUDFLARE_API_TOKEN "
            "or its account); your API key was accepted. The gateway operator must fix the token "
            "or its permissions." + detail, code="upstream_auth_error")
    if code == QUOTA_USED_UP:
        return QuotaExceededError(
            "The Workers AI daily free allocation of this gateway's Cloudflare account is used up; "
            "it resets at 00:00 UTC.", headers=extra)
    if code == OUT_OF_CAPACITY:
        return RateLimitError("Workers AI is out of capacity for this model right now; "
                              "please try again shortly.", headers=extra)
    if "json mode couldn't be met" in cf_message.lower():
        return InvalidRequestError(
            f"The model could not produce JSON matching the requested format. Cloudflare said: "
            f"{cf_message}", param="response_format", code="json_validate_failed")
    if code in MODEL_MISSING:
        return NotFoundError(f"The model '{model}' does not exist on Workers AI.", param="model")
    if code == TOO_LARGE or status == 413:
        return APIError("Workers AI says the request is too large.", status=413,
                        code="request_too_large")
    if code in TIMED_OUT or status == 408:
        return UpstreamTimeoutError("Workers AI timed out while processing the request.")
    if status == 429:
        return RateLimitError("Workers AI rate limit reached; please slow down and retry.",
                              headers=extra)
    if 300 <= status < 400:
        return UpstreamError(
            "Cloudflare answered with a redirect, which the gateway does not follow.")
    if 400 <= status < 500 and (code is not None or cf_message):
        return InvalidRequestError(cf_message or "Workers AI refused the request.",
                                   code=f"cloudflare_{code}" if code else None)
    if status >= 500 or status < 300:
        suffix = f" (Cloudflare error {code})" if code else ""
        return UpstreamError(f"Workers AI answered with an error: HTTP {status}{suffix}.")
    return UpstreamError(f"Workers AI answered HTTP {status} with an unreadable body.")
