"""GET /v1/models and GET /v1/models/{id} (ids contain slashes: `@cf/meta/...`).

A stored key with model patterns sees only the models (and aliases) they allow, as OpenAI
shows a project only its models.
"""
from flask import Blueprint, current_app, g

from gateway.cloudflare.catalogue import TEXT_GENERATION, model_not_found
from gateway.jsonio import json_response

bp = Blueprint("models", __name__)


@bp.get("/models")
def list_models():
    """The models of every task this gateway serves, then the aliases (a stored key: its own)."""
    principal = g.get("principal")
    entries = [entry for entry in current_app.extensions["catalogue"].entries()
               if principal is None
               or principal.allows(entry["id"], entry["metadata"].get("alias_of"))]
    return json_response({"object": "list", "data": entries})


@bp.get("/models/<path:model_id>")
def retrieve_model(model_id):
    """One model (or alias) entry, or 404 model_not_found.

    A chat model's entry also says what its schema lets it do (for an alias: its model's).
    """
    principal = g.get("principal")
    catalogue = current_app.extensions["catalogue"]
    if principal is not None and not principal.allows(model_id,
                                                      catalogue.aliases.target(model_id)):
        raise model_not_found(model_id)
    entry = current_app.extensions["catalogue"].entry(model_id)
    if entry["metadata"]["task"] in (TEXT_GENERATION, None):
        model = entry["metadata"].get("alias_of") or model_id
        capabilities = current_app.extensions["model_schemas"].capabilities(model)
        entry["metadata"]["capabilities"] = capabilities.summary()
    return json_response(entry)
