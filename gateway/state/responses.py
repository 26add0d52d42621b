"""Stored responses: what `previous_response_id`, `GET`/`DELETE /v1/responses/{id}` and
`input_items` read, kept for `RESPONSES_TTL` seconds in the gateway's state store.

Each stored response is one JSON document keyed by its id: the response, every item the
model saw before it (earlier turns included, so a chain survives the deletion of an
earlier link, and one read serves a whole conversation), and the SHA-256 of the key that
created it: another key gets 404, and the key itself is never written. The documents go
through the store interface (`put_json`/`get_json`/`delete` with a TTL), so they live in
the SQLite file or on the Redis server STATE_URL names, shared by every worker and host.
"""
import logging

from gateway.errors import ServiceUnavailableError
from gateway.state import StoreUnavailable

log = logging.getLogger(__name__)

PREFIX = "response:"


class StoredResponses:
    """Responses and their conversations, visible only to the key that made them."""

    def __init__(self, store, ttl):
        self.store = store
        self.ttl = ttl

    def save(self, owner, response, items):
        """Keep `response` and the items before it; an unreachable store only costs the copy."""
        document = {"owner": owner, "response": response, "items": items}
        try:
            self.store.put_json(PREFIX + response["id"], document, self.ttl)
        except StoreUnavailable:
            log.error("state store unreachable: response %s not stored", response["id"])

    def find(self, owner, response_id):
        """The stored document, or None when unknown, expired or another key's."""
        try:
            document = self.store.get_json(PREFIX + response_id)
        except StoreUnavailable:
            raise _unavailable() from None
        if not isinstance(document, dict) or document.get("owner") != owner:
            return None
        return document

    def remove(self, owner, response_id):
        """Delete a response of `owner`'s; False when there is none to delete."""
        if self.find(owner, response_id) is None:
            return False
        try:
            return self.store.delete(PREFIX + response_id)
        except StoreUnavailable:
            raise _unavailable() from None


def _unavailable():
    return ServiceUnavailableError("Stored responses are unavailable right now; try again.",
                                   code="state_store_unavailable")


def init_app(app):
    """Keep responses in the app's state store."""
    app.extensions["responses"] = StoredResponses(app.extensions["state"],
                                                  app.config["RESPONSES_TTL"])
