"""GET /metrics in Prometheus text format, behind METRICS_TOKEN when one is set."""
import hmac

from flask import Blueprint, Response, current_app, request

from gateway.ops import metrics
from gateway.errors import AuthenticationError

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    """The gateway's metrics, merged over all gunicorn workers."""
    token = current_app.config["METRICS_TOKEN"]
    if token:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), token.encode()):
            raise AuthenticationError("A valid METRICS_TOKEN is needed for /metrics.",
                                      headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
