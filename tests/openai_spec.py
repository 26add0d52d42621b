"""Validate gateway responses against the official OpenAI OpenAPI spec.

Usage from tests::

    from tests.openai_spec import validate, validate_chat_completion

    validate_chat_completion(resp.get_json())          # raises AssertionError if invalid
    validate(obj, "CreateChatCompletionStreamResponse")

The spec is ``tests/data/openai.openapi.trimmed.json``: the part of OpenAI's published
OpenAPI document that these tests reach (made by ``tests/tools/trim_openai_spec.py``, whose
header in ``info.x-trimmed`` says which version and commit). Set ``OPENAI_SPEC_PATH`` to
validate against another file, e.g. the full ``openapi.yaml``.

Loading is lazy and done once per process. A YAML document is also cached as JSON in
``<tempdir>/openai-spec-cache-<uid>/`` keyed by the file's path, mtime and size, so later
pytest runs skip the YAML parse. Set ``OPENAI_SPEC_CACHE=0`` to disable that on-disk cache.

Semantics:

* Schemas are validated with JSON Schema Draft 2020-12 (what OpenAPI 3.1 uses);
  ``$ref``s (``#/components/schemas/...``) are resolved through a
  ``referencing.Registry`` holding the whole spec document.
* ``format`` is NOT checked (annotations only).
* OpenAPI-only keywords (``discriminator``, ``example``, ``x-*``, ``deprecated``)
  are ignored, as JSON Schema ignores unknown keywords.
* ``nullable: true`` (an OpenAPI 3.0 keyword that this 3.1 document still uses,
  e.g. on ``CreateChatCompletionStreamResponse.choices[].finish_reason`` and
  ``.usage``) is honoured by default: at a schema node carrying
  ``nullable: true`` a JSON ``null`` is accepted, whatever its ``type``,
  ``enum`` or ``$ref`` say. Pass ``honor_nullable=False`` for pure 2020-12
  semantics (under which every real non-final stream chunk would fail).
* Nothing in the spec is patched. The one known spec bug that real OpenAI
  traffic hits (legacy completions stream chunks carrying
  ``finish_reason: null``) is only relaxed on explicit request, see
  :func:`validate_completion_chunk`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from functools import lru_cache, cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SPEC_URI",
    "spec_path",
    "load_spec",
    "schema",
    "validate",
    "is_valid",
    "validate_chat_completion",
    "validate_chat_chunk",
    "validate_completion",
    "validate_completion_chunk",
    "validate_error",
    "validate_model",
    "validate_models_list",
    "LOAD_STATS",
]

SPEC_URI = "urn:openai:openapi.yaml"
_CACHE_FORMAT = 1  # bump when the on-disk cache layout / parsing changes

_REPO_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_SPEC = _REPO_ROOT / "tests" / "data" / "openai.openapi.trimmed.json"

# Filled in on first load: {"source": "yaml"|"cache", "seconds": float, "path": str,
# "cache_file": str|None}
LOAD_STATS: dict[str, Any] = {}

_lock = threading.Lock()
_spec: dict | None = None


# --------------------------------------------------------------------------- loading


def spec_path() -> Path:
    env = os.environ.get("OPENAI_SPEC_PATH")
    return Path(env).expanduser().resolve() if env else _DEFAULT_SPEC


class _JsonSafeLoader(yaml.CSafeLoader):
    """CSafeLoader without the implicit ``timestamp`` resolver.

    The spec is JSON data written as YAML; an unquoted ``2025-01-01`` (there is
    one in an ``example``) must stay a string, both for JSON-Schema semantics
    and so the parsed document round-trips through the JSON cache unchanged.
    """


_JsonSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}


def _cache_file(path: Path, st: os.stat_result) -> Path | None:
    if os.environ.get("OPENAI_SPEC_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    uid = os.getuid() if hasattr(os, "getuid") else "u"
    key = hashlib.sha256(
        f"{_CACHE_FORMAT}|{path}|{st.st_mtime_ns}|{st.st_size}|{yaml.__version__}".encode()
    ).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"openai-spec-cache-{uid}" / f"{path.stem}-{key}.json"


def _read_cache(cache: Path, path: Path, st: os.stat_result) -> dict | None:
    try:
        with open(cache, "rb") as fh:
            wrapper = json.load(fh)
        meta = wrapper["meta"]
        if (
            meta["format"] == _CACHE_FORMAT
            and meta["path"] == str(path)
            and meta["mtime_ns"] == st.st_mtime_ns
            and meta["size"] == st.st_size
            and isinstance(wrapper["spec"], dict)
        ):
            return wrapper["spec"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_cache(cache: Path, path: Path, st: os.stat_result, spec: dict) -> None:
    try:
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        wrapper = {
            "meta": {
                "format": _CACHE_FORMAT,
                "path": str(path),
                "mtime_ns": st.st_mtime_ns,
                "size": st.st_size,
            },
            "spec": spec,
        }
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(wrapper, fh, separators=(",", ":"))
            os.replace(tmp, cache)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except (OSError, TypeError, ValueError) as exc:  # cache is best effort
        print(f"openai_spec: could not write cache {cache}: {exc}", file=sys.stderr)


def load_spec() -> dict:
    """Return the parsed spec document (loaded once per process)."""
    global _spec
    if _spec is not None:
        return _spec
    with _lock:
        if _spec is not None:
            return _spec
        path = spec_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"OpenAI OpenAPI spec not found at {path}. Expected "
                f"tests/data/openai.openapi.trimmed.json, or set OPENAI_SPEC_PATH."
            )
        t0 = time.perf_counter()
        st = path.stat()
        if path.suffix == ".json":  # JSON parses fast: no cache needed
            with open(path, "rb") as fh:
                _spec = json.load(fh)
            LOAD_STATS.update(source="json", seconds=time.perf_counter() - t0, path=str(path),
                              cache_file=None)
            return _spec
        cache = _cache_file(path, st)
        spec = _read_cache(cache, path, st) if cache else None
        source = "cache"
        if spec is None:
            source = "yaml"
            with open(path, "rb") as fh:
                spec = yaml.load(fh, Loader=_JsonSafeLoader)
            if not isinstance(spec, dict) or "components" not in spec:
                raise ValueError(f"{path} does not look like an OpenAPI document")
            if cache:
                _write_cache(cache, path, st, spec)
        LOAD_STATS.update(
            source=source,
            seconds=time.perf_counter() - t0,
            path=str(path),
            cache_file=str(cache) if cache else None,
        )
        _spec = spec
        return _spec


@lru_cache(maxsize=1)
def _registry() -> Registry:
    resource = Resource(contents=load_spec(), specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def schema(schema_name: str) -> dict:
    """The raw ``#/components/schemas/<schema_name>`` object (do not mutate)."""
    schemas = load_spec()["components"]["schemas"]
    try:
        return schemas[schema_name]
    except KeyError:
        close = sorted(n for n in schemas if schema_name.lower() in n.lower())[:10]
        raise KeyError(
            f"No schema {schema_name!r} in {spec_path()}" + (f"; similar: {close}" if close else "")
        ) from None


# ------------------------------------------------------------------------ validators


def _honor_nullable(fn):
    def keyword(validator, value, instance, sch):
        if instance is None and sch.get("nullable") is True:
            return
        yield from fn(validator, value, instance, sch)

    return keyword


_NullableDraft202012Validator = validators.extend(
    Draft202012Validator,
    {kw: _honor_nullable(fn) for kw, fn in Draft202012Validator.VALIDATORS.items()},
)


@cache
def _validator(ref: str, honor_nullable: bool, registry_key: str = ""):
    registry = _registry() if not registry_key else _extra_registries[registry_key]
    cls = _NullableDraft202012Validator if honor_nullable else Draft202012Validator
    # format_checker=None -> "format" is an annotation only.
    return cls({"$ref": ref}, registry=registry, format_checker=None)


_extra_registries: dict[str, Registry] = {}


def _json_path(error) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _fail(instance: Any, label: str, errors: list) -> None:
    best = best_match(errors)
    schema_path = "/".join(str(p) for p in best.absolute_schema_path)
    msg = (
        f"response does not match OpenAI schema {label}: at {_json_path(best)}: {best.message}"
        f"\n  (schema path: {schema_path}; {len(errors)} top-level error(s))"
    )
    others = [e for e in errors if e is not best][:5]
    if others:
        msg += "\n  other errors:" + "".join(f"\n    {_json_path(e)}: {e.message}" for e in others)
    snippet = json.dumps(instance, default=repr)
    if len(snippet) > 800:
        snippet = snippet[:800] + "..."
    msg += f"\n  instance: {snippet}"
    raise AssertionError(msg)


def validate(instance: Any, schema_name: str, *, honor_nullable: bool = True) -> None:
    """Validate ``instance`` against ``#/components/schemas/<schema_name>``.

    Raises ``AssertionError`` (best-match error path + message) if invalid,
    ``KeyError`` if the schema name does not exist.
    """
    schema(schema_name)  # existence check with a helpful message
    v = _validator(f"{SPEC_URI}#/components/schemas/{schema_name}", honor_nullable)
    errors = list(v.iter_errors(instance))
    if errors:
        _fail(instance, schema_name, errors)


def is_valid(instance: Any, schema_name: str, *, honor_nullable: bool = True) -> bool:
    try:
        validate(instance, schema_name, honor_nullable=honor_nullable)
    except AssertionError:
        return False
    return True


# ---------------------------------------------------------------- convenience wrappers


def validate_chat_completion(obj: Any) -> None:
    """``POST /chat/completions`` (non-streaming) body."""
    validate(obj, "CreateChatCompletionResponse")


def validate_chat_chunk(obj: Any) -> None:
    """One parsed ``data:`` payload of a ``/chat/completions`` SSE stream."""
    validate(obj, "CreateChatCompletionStreamResponse")


def validate_completion(obj: Any) -> None:
    """``POST /completions`` (legacy, non-streaming) body."""
    validate(obj, "CreateCompletionResponse")


_RELAXED_COMPLETION_CHUNK = "relaxed"


def _relaxed_completion_chunk_ref() -> str:
    """A separate resource = CreateCompletionResponse + ``finish_reason`` may be null.

    The spec itself is untouched; this copy lives under its own URI and only
    its ``choices[].finish_reason`` is wrapped in ``anyOf: [<original>, null]``.
    """
    if _RELAXED_COMPLETION_CHUNK not in _extra_registries:
        relaxed = copy.deepcopy(schema("CreateCompletionResponse"))
        fr = relaxed["properties"]["choices"]["items"]["properties"]["finish_reason"]
        relaxed["properties"]["choices"]["items"]["properties"]["finish_reason"] = {
            "anyOf": [fr, {"type": "null"}]
        }
        # Relative $refs inside the copy (#/components/...) must still hit the spec.
        relaxed = _absolutize_refs(relaxed)
        uri = "urn:openai:relaxed:CreateCompletionResponse-chunk"
        _extra_registries[_RELAXED_COMPLETION_CHUNK] = _registry().with_resource(
            uri, Resource(contents=relaxed, specification=DRAFT202012)
        )
    return "urn:openai:relaxed:CreateCompletionResponse-chunk"


def _absolutize_refs(node):
    if isinstance(node, dict):
        return {
            k: (SPEC_URI + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _absolutize_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolutize_refs(v) for v in node]
    return node


def validate_completion_chunk(obj: Any, *, allow_null_finish_reason: bool = False) -> None:
    """One parsed ``data:`` payload of a legacy ``/completions`` SSE stream.

    The spec has no separate chunk schema: ``CreateCompletionResponse`` says
    "both the streamed and non-streamed response objects share the same shape",
    so chunks are validated against it (``object: "text_completion"``).

    Spec bug: that schema's ``choices[].finish_reason`` is a required,
    non-nullable enum (stop/length/content_filter), yet every non-final chunk
    OpenAI streams - including the spec's own "Streaming" example - carries
    ``"finish_reason": null``. Strict by default; pass
    ``allow_null_finish_reason=True`` to accept ``null`` there (and only there).
    """
    if not allow_null_finish_reason:
        validate(obj, "CreateCompletionResponse")
        return
    ref = _relaxed_completion_chunk_ref()
    errors = list(_validator(ref, True, _RELAXED_COMPLETION_CHUNK).iter_errors(obj))
    if errors:
        _fail(obj, "CreateCompletionResponse (finish_reason may be null)", errors)


def validate_error(obj: Any) -> None:
    """Error body: ``{"error": {"message", "type", "param", "code"}}``."""
    validate(obj, "ErrorResponse")


def validate_model(obj: Any) -> None:
    """``GET /models/{model}`` body / one entry of ``GET /models``.

    Note: the spec's ``Model`` has no ``type: object``, so a non-object (e.g. a
    bare string) passes; ``required``/``properties`` only constrain objects.
    Extra properties are allowed (no ``additionalProperties``).
    """
    validate(obj, "Model")


def validate_models_list(obj: Any) -> None:
    """``GET /models`` body."""
    validate(obj, "ListModelsResponse")


if __name__ == "__main__":  # python tests/openai_spec.py -> report load timing
    t = time.perf_counter()
    load_spec()
    print(LOAD_STATS)
    t2 = time.perf_counter()
    validate({"object": "list", "data": []}, "ListModelsResponse")
    print(f"first validation incl. validator build: {time.perf_counter() - t2:.4f}s")
    print(f"total: {time.perf_counter() - t:.4f}s")
