"""Health checks for load balancers and platforms; neither needs a key.

`/healthz` says the process is alive and never calls upstream. `/readyz` says the
gateway can serve: its configuration is complete and the model catalogue is
reachable or cached (a cached list needs no upstream call). Anonymous callers learn
only ready or not; the reasons go to the log (once per change) and to the operator
(METRICS_ALLOW_IPS or METRICS_TOKEN, as for /metrics).
"""
import logging

from flask import Blueprint, current_app

from gateway.errors import APIError
from gateway.jsonio import json_response
from gateway.routes.metrics import operator_access

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


def _problems():
    problems = []
    if not current_app.config["API_KEYS"]:
        problems.append("API_KEYS is not set: every request would get 401")
    if not current_app.extensions["upstream"].configured:
        problems.append("Cloudflare credentials are not set (CLOUDFLARE_ACCOUNT_ID and "
                        "CLOUDFLARE_API_TOKEN, or CLOUDFLARE_ACCOUNTS)")
    else:
        try:
            current_app.extensions["catalogue"].records()
        except APIError as error:
            problems.append(f"the model catalogue is unreachable: {error.message}")
    return problems


@bp.get("/readyz")
def readyz():
    """Readiness: 200 when the gateway can serve, 503 otherwise (reasons for the operator)."""
    problems = _problems()
    last = current_app.extensions.setdefault("readyz_reasons", [None])  # per worker
    if problems != last[0]:
        last[0] = problems
        if problems:
            log.warning("not ready: %s", "; ".join(problems))
    if not problems:
        return json_response({"status": "ready"})
    body = {"status": "unavailable"}
    if operator_access():
        body["reasons"] = problems
    return json_response(body, 503)
