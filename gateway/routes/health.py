"""Health checks for load balancers and platforms; neither needs a key.

`/healthz` says the process is alive and never calls upstream. `/readyz` says the
gateway can serve: its configuration is complete and the model catalogue is
reachable or cached (a cached list needs no upstream call).
"""
from flask import Blueprint, current_app

from gateway.errors import APIError
from gateway.jsonio import json_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Readiness: 200 when the gateway can serve, 503 with the reason otherwise."""
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
    if problems:
        return json_response({"status": "unavailable", "reasons": problems}, 503)
    return json_response({"status": "ready"})
