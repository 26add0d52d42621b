"""Stop sequences the model cannot take natively: cut locally, also across stream events.

The output ends before the first occurrence of any stop sequence. In a stream, text
that could be the start of a stop sequence is held back until the next event settles
it, so no byte of a stop sequence reaches the client however the upstream splits it;
only the longest possible partial match is ever held.
"""


def cut(text, stops):
    """(text before the first stop sequence, whether one was found)."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not positions:
        return text, False
    return text[:min(positions)], True


def _held_length(text, stops):
    """Length of the longest tail of `text` that begins some stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest


class StopScanner:
    """Feed text pieces; get what may go out now, and whether a stop sequence was hit."""

    def __init__(self, stops):
        self.stops = list(stops)
        self.pending = ""
        self.stopped = False

    def feed(self, text):
        """The text safe to send now (the stop, once found, is never sent nor anything after)."""
        if self.stopped or not text:
            return ""
        buffer = self.pending + text
        before, found = cut(buffer, self.stops)
        if found:
            self.stopped, self.pending = True, ""
            return before
        held = _held_length(buffer, self.stops)
        self.pending = buffer[len(buffer) - held:] if held else ""
        return buffer[:len(buffer) - held]

    def flush(self):
        """What was held back, once the stream ended without completing a stop sequence."""
        rest, self.pending = self.pending, ""
        return rest
