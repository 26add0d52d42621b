"""GET /v1/models and GET /v1/models/{id} (ids contain slashes: `@cf/meta/...`)."""
from flask import Blueprint, current_app

from gateway.jsonio import json_response

bp = Blueprint("models", __name__)


@bp.get("/models")
def list_models():
    """The Text Generation models this gateway serves."""
    entries = current_app.extensions["catalogue"].entries()
    return json_response({"object": "list", "data": entries})


@bp.get("/models/<path:model_id>")
def retrieve_model(model_id):
    """One model entry with what its schema says it can do, or 404 model_not_found."""
    entry = current_app.extensions["catalogue"].entry(model_id)
    capabilities = current_app.extensions["model_schemas"].capabilities(model_id)
    entry["metadata"]["capabilities"] = capabilities.summary()
    return json_response(entry)
