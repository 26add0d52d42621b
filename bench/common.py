"""What the fake upstream and the load generator agree on: the model, the text, the directives.

The load generator asks for a reply by putting a directive in the user message, e.g.
``[[bench seed=42 tokens=64 first_ms=50 gap_ms=20]]``. The gateway forwards the message
content untouched, so the fake reads the same directive whether it is called directly
(its OpenAI route) or through the gateway (its Workers AI route), and both answer with
``tokens(seed, n)``: a deterministic text that differs per request (a mixed-up or
truncated stream cannot pass verification) and holds characters JSON must escape
(quotes, backslashes, newlines) and multi-byte UTF-8 (accents, CJK, an emoji), so the
gateway's decoding and re-encoding is exercised on every chunk.
"""
import re

MODEL = "@cf/meta/llama-3.1-8b-instruct"
ACCOUNT = "bench-account"
TOKEN = "bench-upstream-token"
API_KEY = "bench-client-key"
PROMPT_TOKENS = 24

VOCAB = (
    " the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", ",", ".",
    " Workers", " AI", " gateway", " stream", " token", " latency", " \"quoted\"", " back\\slash",
    "\n", " café", " naïve", " Straße", " 東京", " 日本語", " 🚀", " —", " x", " y", " z", " 42",
    " {json}", " [list]", " <tag>", " a&b", " tab\t", " emoji🙂", " über", " Ωmega", " ok", "!",
)
PADDING = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_DIRECTIVE = re.compile(r"\[\[bench ([^\]]*)\]\]")


def token_ids(seed, count):
    """Indices into VOCAB of the `count` tokens of the reply for request `seed`."""
    size = len(VOCAB)
    return [(seed * 7919 + i * 31 + (i * i) % 17) % size for i in range(count)]


def tokens(seed, count):
    """The `count` tokens of the reply for request `seed`."""
    return [VOCAB[i] for i in token_ids(seed, count)]


def expected_text(seed, count):
    return "".join(tokens(seed, count))


def directive(seed, count, first_ms=0, gap_ms=0):
    """The user message that makes the fake answer `tokens(seed, count)` with these delays."""
    return (f"[[bench seed={seed} tokens={count} first_ms={first_ms} gap_ms={gap_ms}]] "
            "Tell me a story about a benchmark.")


def parse_directive(text):
    """(seed, tokens, first_ms, gap_ms) from a message; defaults when there is no directive."""
    values = {"seed": 0, "tokens": 16, "first_ms": 0, "gap_ms": 0}
    match = _DIRECTIVE.search(text or "")
    if match:
        for item in match.group(1).split():
            key, _, value = item.partition("=")
            if key in values:
                values[key] = int(float(value)) if key in ("seed", "tokens") else float(value)
    return values["seed"], values["tokens"], values["first_ms"], values["gap_ms"]


def finish_reason(completion_tokens, max_tokens):
    """What the gateway reports (and so what the fake's OpenAI route reports too)."""
    return "length" if completion_tokens >= max_tokens else "stop"


def usage(count):
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count,
            "total_tokens": PROMPT_TOKENS + count}
