"""The admin API for client keys, behind ADMIN_TOKEN: /admin/keys and /admin/usage.

Registered only when ADMIN_TOKEN is set, so without it every /admin route answers 404
like any unknown path. With it, `Authorization: Bearer <ADMIN_TOKEN>` is required (client
keys, API_KEYS included, are never accepted here: 401). A new key's secret is in the
answer to its creation and nowhere else, ever.
"""
import hmac

from flask import Blueprint, current_app, request

from gateway.errors import APIError, AuthenticationError, InvalidRequestError, NotFoundError
from gateway.jsonio import json_response
from gateway.openai.generation import parse_body, validate
from gateway.state.keys import NameTaken, create_key, public
from gateway.state.store import USAGE_DAYS, since
from schemas import key_request

bp = Blueprint("admin", __name__)


@bp.before_request
def require_admin_token():
    """401 unless the request carries ADMIN_TOKEN (compared in constant time)."""
    token = current_app.config["ADMIN_TOKEN"]
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(),
                                                             token.encode()):
        raise AuthenticationError("A valid ADMIN_TOKEN is needed for the admin API.",
                                  code="invalid_admin_token",
                                  headers={"WWW-Authenticate": "Bearer"})


def _store():
    return current_app.extensions["state"]


@bp.post("/keys")
def create():
    """201 with the new key's record and, this once, its secret; 409 when the name is taken."""
    fields = validate(key_request, parse_body())
    try:
        secret, record = create_key(_store(), fields)
    except NameTaken:
        raise APIError(f"A key named '{fields['name']}' already exists.", param="name",
                       code="key_name_taken", status=409) from None
    return json_response({**public(record), "key": secret}, 201)


@bp.get("/keys")
def list_keys():
    """Every stored key, without secrets."""
    return json_response({"object": "list", "data": [public(r) for r in _store().list_keys()]})


@bp.delete("/keys/<name>")
def revoke(name):
    """Revoke a key: 200 with its record, 404 when there is none."""
    record = _store().remove_key(name)
    if record is None:
        raise NotFoundError(f"No key named '{name}'.", param="name", code="key_not_found")
    return json_response({**public(record), "revoked": True})


@bp.get("/usage")
def usage():
    """Requests and tokens per key name, UTC day and model over the last `days` days."""
    days = request.args.get("days", "7")
    if not days.isdigit() or not 1 <= int(days) <= USAGE_DAYS:
        raise InvalidRequestError(f"'days' must be a whole number from 1 to {USAGE_DAYS}.",
                                  param="days")
    name = request.args.get("name") or None
    return json_response({"object": "list", "data": _store().usage(since(int(days)), name)})
