"""POST /v1/responses, GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items.

A Responses request is translated to a chat request and served by the chat path
(`gateway.openai.generation`), so keys, the model allow-list, the account pool,
retries, error mapping, logs and metrics apply unchanged.
"""
from flask import Blueprint, current_app, g, request
from marshmallow import Schema, ValidationError, fields, validate

from gateway.errors import APIError, InvalidRequestError, NotFoundError
from gateway.jsonio import json_response
from gateway.openai import responses, responses_answer, translate
from gateway.openai.generation import check_counts, complete, parse_body, stream
from gateway.openai.generation import validate as load
from gateway.openai.responses_stream import ResponsesStream
from schemas import chat_request, responses_request

bp = Blueprint("responses", __name__)


class ResponseNotFound(NotFoundError):
    """No stored response with that id for this key (OpenAI's 404 has no code)."""

    code = None


def _store():
    return current_app.extensions["responses"]


def _stored(response_id):
    document = _store().find(g.key_hash, response_id)
    if document is None:
        raise ResponseNotFound(f"Response with id '{response_id}' not found.")
    return document


def _history(request_body):
    """The items of the conversation `previous_response_id` continues (none without one)."""
    previous_id = request_body.get("previous_response_id")
    if not previous_id:
        return []
    document = _store().find(g.key_hash, previous_id)
    if document is None:
        raise NotFoundError(f"Previous response with id '{previous_id}' not found.",
                            param="previous_response_id", code="previous_response_not_found")
    return document["items"] + document["response"]["output"]


@bp.post("/responses")
def create_response():
    """A model response, as one object or as the Responses API's event stream."""
    raw = parse_body()
    _check_counts({"messages": raw.get("input")}, [])  # before marshmallow's per-item cost
    body = load(responses_request, raw)
    items, chat, sources = responses.chat_request(body, _history(body))
    _check_counts(chat, sources)  # the whole conversation, earlier turns included
    owner = g.key_hash

    def keep(response):
        if body["store"]:
            _store().save(owner, response, items)

    try:
        data = load(chat_request, chat)
        shell = responses_answer.shell(body, data, responses.new_id("resp"), translate.now())
        if data["stream"]:
            return stream("chat", data, translate.chat_payload,
                          adapt=lambda chat_stream: ResponsesStream(chat_stream, shell, keep))
        completion = complete(data, translate.chat_payload, translate.chat_completion)
    except APIError as error:
        raise responses.chat_error(error, sources) from None
    response = responses_answer.from_chat(completion, shell)
    keep(response)
    return json_response(response)


def _check_counts(chat, sources):
    """The chat path's limits on messages and content parts (MAX_MESSAGES, MAX_CONTENT_PARTS)."""
    try:
        check_counts(chat)
    except APIError as error:
        raise responses.chat_error(error, sources) from None


@bp.get("/responses/<response_id>")
def retrieve_response(response_id):
    """A stored response of this key's."""
    if request.args.get("stream", "false").lower() not in ("false", "0"):
        raise InvalidRequestError("Streaming a stored response again is not supported.",
                                  param="stream")
    return json_response(_stored(response_id)["response"])


@bp.delete("/responses/<response_id>")
def delete_response(response_id):
    """Forget a stored response (conversations chained from it keep their copy)."""
    if not _store().remove(g.key_hash, response_id):
        raise ResponseNotFound(f"Response with id '{response_id}' not found.")
    return json_response({"id": response_id, "object": "response", "deleted": True})


class ListQuery(Schema):
    """Query of `GET /v1/responses/{id}/input_items`: OpenAI's list pagination."""

    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    order = fields.String(load_default="desc", validate=validate.OneOf(("asc", "desc")))
    after = fields.String()
    include = fields.List(fields.String())


@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id):
    """The items the model saw for a stored response (earlier turns included), paginated."""
    query = {key: request.args.getlist(key) if key == "include" else value
             for key, value in request.args.items()}
    try:
        query = ListQuery().load(query, unknown="exclude")
    except ValidationError as exc:
        param, messages = next(iter(exc.messages.items()))
        raise InvalidRequestError(f"Invalid value for '{param}': {messages[0]}",
                                  param=param) from None
    items = _stored(response_id)["items"]
    if query["order"] == "desc":
        items = items[::-1]
    if "after" in query:
        ids = [item["id"] for item in items]
        if query["after"] not in ids:
            raise InvalidRequestError(f"No input item with id '{query['after']}'.", param="after")
        items = items[ids.index(query["after"]) + 1:]
    page = items[:query["limit"]]
    return json_response({"object": "list", "data": page,
                          "first_id": page[0]["id"] if page else None,
                          "last_id": page[-1]["id"] if page else None,
                          "has_more": len(items) > len(page)})
