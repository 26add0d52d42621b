"""Questions the media routes ask of a model's input JSON schema (`ai/models/schema`).

Which parameters exist and their bounds (image `width`, a speech `speaker` enum), and
in which form a model takes audio: a base64 string, a byte array, or the raw bytes with
their content type. The schema's branches (`oneOf`/`anyOf`) are merged, as in
`gateway.cloudflare.capabilities`. A schema that could not be read answers "unknown"
(None) where it matters, so callers can tell "the model has no such input" apart.
"""
from gateway.cloudflare.capabilities import branches, properties, types

BASE64 = "base64"
BYTE_ARRAY = "byte_array"
RAW = "raw"


class InputSchema:
    """A model's input schema, or None when Cloudflare could not tell."""

    def __init__(self, schema):
        root = schema.get("input") if isinstance(schema, dict) else None
        self.known = isinstance(root, dict)
        self.root = root if self.known else {}
        self.props = properties(self.root, self.root) if self.known else {}

    def has(self, name):
        """Whether the input takes `name` (True when the schema is unknown: Cloudflare judges)."""
        return name in self.props or not self.known

    def _values(self, name, key):
        found = []
        for node in self.props.get(name, []):
            for branch in branches(self.root, node):
                if key in branch:
                    found.append(branch[key])
        return found

    def bounds(self, name):
        """(minimum, maximum) of a numeric input; None for a side the schema leaves open."""
        lows = [v for v in self._values(name, "minimum") if isinstance(v, (int, float))]
        highs = [v for v in self._values(name, "maximum") if isinstance(v, (int, float))]
        return (min(lows) if lows else None), (max(highs) if highs else None)

    def max_length(self, name):
        """The longest string an input takes, else None."""
        lengths = [v for v in self._values(name, "maxLength") if isinstance(v, int)]
        return max(lengths) if lengths else None

    def enum(self, name):
        """The values an input allows, or None when any value goes (or it is unknown)."""
        values = [v for e in self._values(name, "enum") if isinstance(e, list) for v in e]
        return list(dict.fromkeys(values)) or None

    def audio_form(self):
        """How the model takes audio: BASE64, BYTE_ARRAY or RAW bytes; None when unknown."""
        nodes = self.props.get("audio")
        if nodes:
            kinds = types(self.root, nodes)
            if "string" in kinds:
                return BASE64
            if "array" in kinds:
                return BYTE_ARRAY
            if "object" in kinds:
                return RAW  # {body, contentType}: over REST, the bytes themselves
        for branch in branches(self.root, self.root):
            if branch.get("type") == "string" and branch.get("format") == "binary":
                return RAW
        return None


__all__ = ["BASE64", "BYTE_ARRAY", "RAW", "InputSchema"]
