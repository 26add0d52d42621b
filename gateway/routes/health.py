"""GET /healthz: the process is alive. No key, no upstream call, nothing revealed."""
from flask import Blueprint

from gateway.jsonio import json_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness for load balancers and platforms."""
    return json_response({"status": "ok"})
