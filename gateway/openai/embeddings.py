"""OpenAI's embeddings over Workers AI's Text Embeddings models: dicts in, dicts out.

Workers AI takes `{text: [...]}` (at most 100 texts a call for the bge family, the
`maxItems` of its schema) and answers `{shape: [n, dim], data: [[...]]}`; bge-m3 can
also answer with the vectors under `response`. Neither says how many tokens it read,
so usage is Cloudflare's when it gives one and otherwise an estimate (README).
"""
import base64
import math
import struct

from gateway.cloudflare.catalogue import int_or_none, record_property

PER_CALL = 100  # Cloudflare's documented inputs per call, when the model's schema says nothing
BYTES_PER_TOKEN = 4  # the usual rule of thumb for English text with BPE tokenizers


class UnreadableEmbeddings(ValueError):
    """Cloudflare answered 200 with something that is not the vectors asked for."""


def dimension_of(record):
    """The model's vector size from its catalogue record (`output_dimensions`), else None."""
    return int_or_none(record_property(record, "output_dimensions"))


def batches(texts, size):
    """`texts` in consecutive groups of at most `size`."""
    return [texts[start:start + size] for start in range(0, len(texts), size)]


def payload(texts, input_key="text"):
    """The Workers AI input for one batch: `text`, or bge-m3's `contexts` form."""
    if input_key == "contexts":
        return {"contexts": [{"text": text} for text in texts]}
    return {input_key: texts}


def _is_vector(value):
    return isinstance(value, list) and value and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        for x in value)


def read_vectors(body, expected):
    """(vectors, prompt tokens or None) from one answer that embedded `expected` texts."""
    result = body.get("result", body) if isinstance(body, dict) else None
    if not isinstance(result, dict):
        raise UnreadableEmbeddings("result is not an object")
    vectors = result.get("data") if "data" in result else result.get("response")
    if not isinstance(vectors, list) or len(vectors) != expected:
        raise UnreadableEmbeddings(f"expected {expected} vectors")
    if not all(_is_vector(vector) for vector in vectors):
        raise UnreadableEmbeddings("a vector is not a list of numbers")
    if len({len(vector) for vector in vectors}) != 1:
        raise UnreadableEmbeddings("vectors of different sizes")
    usage = result.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        tokens = None
    return vectors, tokens


def estimate_tokens(texts):
    """About one token per 4 bytes of UTF-8, at least one per input (never a silent 0)."""
    return sum(max(1, math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)) for text in texts)


def encode(vector, encoding_format):
    """A vector as OpenAI sends it: floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return [float(x) for x in vector]


def embedding_list(vectors, *, model, prompt_tokens, encoding_format="float"):
    """OpenAI's `CreateEmbeddingResponse` for the vectors, in input order."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index,
                  "embedding": encode(vector, encoding_format)}
                 for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
