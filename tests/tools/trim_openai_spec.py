"""Cut OpenAI's OpenAPI document down to the schemas our tests validate against.

The suite checks every body, chunk, event and error the gateway sends against OpenAI's own
component schemas (tests/openai_spec.py). The full document is about 3 MB of YAML and is not
ours to ship whole, so the repository carries only the schemas reachable from ROOTS, with every
`$ref` they need, transitively, and nothing else changed.

Refresh it when OpenAI publishes a new spec (https://github.com/openai/openai-openapi,
`openapi.yaml`)::

    python -m tests.tools.trim_openai_spec path/to/openapi.yaml \
        --commit <sha> --date <YYYY-MM-DD>

A new route adds the names of its response schemas to ROOTS and runs this again.
"""
import argparse
import hashlib
import json
from pathlib import Path

import yaml

OUTPUT = Path(__file__).resolve().parents[1] / "data" / "openai.openapi.trimmed.json"

# The component schemas the tests name, one group per route.
ROOTS = [
    "ErrorResponse",                                                   # every error
    "ListModelsResponse", "Model",                                     # /v1/models
    "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",  # /v1/chat/completions
    "CreateCompletionResponse",                                        # /v1/completions
    "CreateEmbeddingResponse",                                         # /v1/embeddings
    "ImagesResponse",                                                  # /v1/images/generations
    "CreateTranscriptionResponseJson", "CreateTranscriptionResponseVerboseJson",
    "CreateTranslationResponseJson", "CreateTranslationResponseVerboseJson",  # /v1/audio/*
    "Response", "ResponseStreamEvent", "ResponseItemList",             # /v1/responses
]

REF_PREFIX = "#/components/schemas/"


class _JsonSafeLoader(yaml.CSafeLoader):
    """YAML without implicit timestamps: the spec is JSON data, dates in examples stay strings."""


_JsonSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}


def _refs(node):
    """Every component-schema name that `node` refers to, at any depth."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            yield ref[len(REF_PREFIX):]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def reachable(schemas, roots):
    """The names reachable from `roots` through `$ref`s (a KeyError names a missing root)."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(ref for ref in _refs(schemas[name]) if ref not in seen)
    return seen


def trim(spec, roots, source):
    """A small OpenAPI document holding only the schemas reachable from `roots`."""
    schemas = spec["components"]["schemas"]
    keep = reachable(schemas, roots)
    return {
        "openapi": spec["openapi"],
        "info": {**spec["info"], "x-trimmed": source},
        "paths": {},
        "components": {"schemas": {name: schemas[name] for name in sorted(keep)}},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="OpenAI's openapi.yaml")
    parser.add_argument("--commit", default="", help="openai/openai-openapi commit it came from")
    parser.add_argument("--date", default="", help="that commit's date")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    raw = args.spec.read_bytes()
    spec = yaml.load(raw, Loader=_JsonSafeLoader)
    source = {
        "from": "OpenAI's published OpenAPI document, github.com/openai/openai-openapi openapi.yaml",
        "version": spec["info"]["version"],
        "commit": args.commit,
        "date": args.date,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "roots": ROOTS,
        "made_by": "python -m tests.tools.trim_openai_spec (only the schemas these roots reach)",
    }
    trimmed = trim(spec, ROOTS, source)
    args.output.write_text(json.dumps(trimmed, indent=1, sort_keys=False) + "\n")
    print(f"{len(trimmed['components']['schemas'])} of {len(spec['components']['schemas'])} "
          f"schemas -> {args.output} ({args.output.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
