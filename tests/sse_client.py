"""Read a gateway SSE response the strict way a picky client would."""
import json


def read_events(response):
    """Parse every event of a streamed `requests` response: JSON dicts, and "[DONE]".

    Fails on anything an OpenAI SDK would choke on: a data line that is not JSON, an
    event after [DONE], an unterminated last event. Comment lines are skipped.
    """
    events = []
    buffer = b""
    for piece in response.iter_content(chunk_size=None):
        buffer += piece
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            lines = [line for line in block.decode("utf-8").split("\n") if not line.startswith(":")]
            if not lines:
                continue
            assert len(lines) == 1 and lines[0].startswith("data: "), block
            data = lines[0][len("data: "):]
            assert "[DONE]" not in events, "event after [DONE]"
            events.append(data if data == "[DONE]" else json.loads(data))
    assert buffer == b"", f"unterminated event: {buffer!r}"
    return events


def text_of(events):
    """The streamed text of chat or completion chunks."""
    parts = []
    for event in events:
        if isinstance(event, dict) and event.get("choices"):
            choice = event["choices"][0]
            parts.append(choice["delta"].get("content") or "" if "delta" in choice else choice["text"])
    return "".join(parts)
