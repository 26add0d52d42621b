"""Server-sent events framing: an incremental decoder for Workers AI's stream, and encoders.

Upstream bytes arrive cut at arbitrary places (inside a line, inside a UTF-8
character, between `\\r` and `\\n`); the decoder only ever splits on complete lines, so
what the client sees does not depend on where the cuts fall.
"""
from gateway import jsonio

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"
MAX_LINE_BYTES = 1024 * 1024  # an upstream line longer than this is a broken stream


class SSEFormatError(ValueError):
    """The upstream stream is not SSE we can read."""


class SSEDecoder:
    """Bytes in, the payloads of `data:` lines out (as bytes, one per line)."""

    def __init__(self):
        self._buffer = b""

    def feed(self, chunk):
        """Add bytes; return the data payloads completed by them."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\n" not in buffer:
            if len(buffer) > MAX_LINE_BYTES:
                raise SSEFormatError("upstream line too long")
            self._buffer = buffer
            return []
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        return [payload for payload in map(_payload, lines) if payload is not None]

    def flush(self):
        """Payloads of a last line that had no newline (a stream cut short by EOF)."""
        payload = _payload(self._buffer)
        self._buffer = b""
        return [] if payload is None else [payload]


def _payload(line):
    """The data of one SSE line, or None for comments, other fields and blank lines."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.startswith(b"data:"):
        return None
    data = line[5:]
    return data[1:] if data.startswith(b" ") else data


def encode(obj):
    """One SSE event carrying `obj` as JSON."""
    return b"data: " + jsonio.dumps(obj) + b"\n\n"
