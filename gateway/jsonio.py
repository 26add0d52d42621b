"""Fast JSON in and out (orjson), shared by responses, stream chunks and Flask's `jsonify`.

orjson is several times faster than the standard library on the per-chunk hot path
of a stream, and it refuses invalid UTF-8 instead of passing it on.
"""
import orjson
from flask import Response
from flask.json.provider import JSONProvider


def dumps(obj):
    """Serialize to compact UTF-8 JSON bytes."""
    return orjson.dumps(obj)


def loads(data):
    """Parse JSON from bytes or str; raises ValueError (orjson.JSONDecodeError) when invalid."""
    return orjson.loads(data)


# orjson reads up to 1,024 levels of nesting but writes only 255: a body between the two
# would parse and then fail when it is sent on (https://github.com/ijl/orjson#serialize).
MAX_DEPTH = 255


def nested_too_deep(raw, obj):
    """Whether `obj` (parsed from the bytes `raw`) cannot be written back out. Only a body
    with more than MAX_DEPTH brackets can be, so only such a body is tried."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    try:
        orjson.dumps(obj)
    except TypeError:
        return True
    return False


def json_response(body, status=200, headers=None):
    """A JSON response with the given status and extra headers."""
    return Response(orjson.dumps(body), status=status, headers=headers,
                    mimetype="application/json")


class OrjsonProvider(JSONProvider):
    """Flask JSON provider backed by orjson."""

    def dumps(self, obj, **kwargs):
        return orjson.dumps(obj).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return Response(orjson.dumps(obj), mimetype="application/json")
