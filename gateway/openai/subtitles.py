"""SubRip (SRT) and WebVTT subtitles from a transcript's timed segments or words.

Workers AI's Whisper models send WebVTT themselves (passed on as they are) but no
SRT, and Deepgram sends neither, so the gateway builds both from what it has: the
segments when the model gives them, else the words in groups, else one cue for the
whole text.
"""

WORDS_PER_CUE = 12
SECONDS_PER_CUE = 6.0


def timestamp(seconds, separator):
    """`HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _word_cues(words):
    cues, current = [], []
    for word in words:
        if current and (len(current) >= WORDS_PER_CUE
                        or word["end"] - current[0]["start"] > SECONDS_PER_CUE):
            cues.append(current)
            current = []
        current.append(word)
    if current:
        cues.append(current)
    return [(c[0]["start"], c[-1]["end"], " ".join(w["word"].strip() for w in c)) for c in cues]


def cues(text, segments=(), words=(), duration=None):
    """[(start, end, text)] for the subtitles."""
    if segments:
        return [(s["start"], s["end"], s["text"].strip()) for s in segments if s["text"].strip()]
    if words:
        return _word_cues(words)
    if not text.strip():
        return []
    return [(0.0, duration or 0.0, text.strip())]


def srt(timed):
    """SubRip text for the cues."""
    blocks = [f"{index}\n{timestamp(start, ',')} --> {timestamp(end, ',')}\n{text}\n"
              for index, (start, end, text) in enumerate(timed, 1)]
    return "\n".join(blocks)


def vtt(timed):
    """WebVTT text for the cues."""
    blocks = [f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{text}\n"
              for start, end, text in timed]
    return "\n".join(["WEBVTT\n", *blocks])
