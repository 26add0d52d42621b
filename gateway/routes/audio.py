"""POST /v1/audio/transcriptions, /v1/audio/translations and /v1/audio/speech."""
import io
import mimetypes

from flask import Blueprint, Response, current_app, g, request, stream_with_context
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from gateway import jsonio
from gateway.cloudflare.catalogue import SPEECH_RECOGNITION, TEXT_TO_SPEECH
from gateway.errors import APIError, InvalidRequestError, UpstreamError
from gateway.openai import speech, transcripts
from gateway.openai.byte_stream import relay_bytes
from gateway.openai.calls import Caller, json_request, start
from gateway.openai.generation import read_body, validate
from schemas import speech_request, transcription_request

bp = Blueprint("audio", __name__)
UPLOADS = ("audio.create_transcription", "audio.create_translation")


def upload_limit():
    """before_request: uploads may be as large as AUDIO_MAX_BYTES, not MAX_BODY_BYTES.

    Installed ahead of every other hook, so that whatever reads the body first (a key
    check, this route) reads it under the upload's limit.
    """
    if request.endpoint in UPLOADS:
        request.max_content_length = current_app.config["AUDIO_MAX_BYTES"]


def init_app(app):
    app.before_request(upload_limit)


@bp.post("/audio/transcriptions")
def create_transcription():
    """The text of an uploaded audio file, in its language."""
    return _recognise(translate=False)


@bp.post("/audio/translations")
def create_translation():
    """The English text of an uploaded audio file."""
    return _recognise(translate=True)


def _recognise(translate):
    form, audio, content_type = _read_upload()
    data = validate(transcription_request, form)
    resolved = start(data["model"], SPEECH_RECOGNITION, 1, len(audio))
    schema = current_app.extensions["model_schemas"].get(resolved.name)
    if data["temperature"]:
        raise InvalidRequestError("Workers AI's speech recognition models take no temperature; "
                                  "send 0 or leave it out.", param="temperature")
    payload, raw = transcripts.upstream_request(audio, content_type, data, data["model"], schema,
                                                translate)
    caller = Caller(resolved.name)
    if raw is not None:
        answer = caller.run(data=raw, content_type=content_type)
    else:
        answer = caller.run(payload)
    try:
        transcript = transcripts.read_transcript(answer.body)
    except transcripts.UnreadableTranscript:
        raise UpstreamError("Workers AI answered with a body the gateway could not read as a "
                            "transcript.") from None
    if transcript.duration is None:
        transcript.duration = transcripts.wav_seconds(audio)
    body, mimetype = transcripts.render(
        transcript, data["response_format"], task="translate" if translate else "transcribe",
        language="english" if translate else data.get("language"),
        with_words="word" in data.get("timestamp_granularities", []))
    if mimetype == "application/json":
        return jsonio.json_response(body)
    return Response(body, mimetype=mimetype)


def _read_upload():
    """(form fields, audio bytes, audio content type) of a multipart upload.

    The body may be as large as AUDIO_MAX_BYTES (not the 1 MiB of the JSON routes); it is
    read by the same reader as every other body and parsed from memory.
    """
    if request.mimetype != "multipart/form-data":
        raise InvalidRequestError("Send the audio as multipart/form-data with a 'file' field.",
                                  param="file")
    fields, files = upload_form()
    upload = files.get("file")
    if upload is None:
        raise InvalidRequestError("'file' is required: the audio to transcribe.", param="file")
    audio = upload.read()
    if not audio:
        raise InvalidRequestError("'file' is empty.", param="file")
    content_type = upload.mimetype if upload.mimetype.startswith("audio/") else \
        mimetypes.guess_type(upload.filename or "")[0] or transcripts.sniff_audio_type(audio) \
        or "application/octet-stream"
    form = {key: fields.get(key) for key in fields if not key.startswith("timestamp_granularities")}
    granularities = fields.getlist("timestamp_granularities[]") + fields.getlist(
        "timestamp_granularities")
    if granularities:
        form["timestamp_granularities"] = granularities
    return form, audio, content_type


def upload_form():
    """(fields, files) of the multipart upload, read by the shared body reader under
    AUDIO_MAX_BYTES (413 naming `file` above it) and parsed from memory once per request:
    the per-key check (gateway.state.guard) reads its `model` before the route runs."""
    parsed = g.get("upload_form")
    if parsed is None:
        parsed = g.upload_form = _parse_form()
    return parsed


def _parse_form():
    limit = request.max_content_length
    try:
        raw = read_body()
    except RequestEntityTooLarge:
        raise APIError(f"The upload is larger than this gateway's limit of {limit} bytes "
                       "(AUDIO_MAX_BYTES).", param="file", code="request_too_large",
                       status=413) from None
    parser = FormDataParser(max_form_memory_size=request.max_form_memory_size,
                            max_form_parts=request.max_form_parts)
    try:
        _, fields, files = parser.parse(io.BytesIO(raw), request.mimetype, len(raw),
                                        request.mimetype_params)
    except (ValueError, RequestEntityTooLarge):
        raise InvalidRequestError("The multipart form could not be read.", param="file") from None
    return fields, files


@bp.post("/audio/speech")
def create_speech():
    """The spoken text as audio bytes, sent on as they arrive from Workers AI."""
    data = json_request(speech_request)
    resolved = start(data["model"], TEXT_TO_SPEECH, 1, len(data["input"]))
    schema = current_app.extensions["model_schemas"].get(resolved.name)
    payload = speech.speech_input(data, data["model"], schema)
    caller = Caller(resolved.name)
    caller.stats.stream = True
    answer = caller.open(payload)
    content_type = speech.CONTENT_TYPES[data["response_format"]]
    if answer.stream is None:  # base64 in JSON (melotts)
        try:
            audio = speech.audio_in_json(answer.body)
        except speech.NotAudio:
            raise UpstreamError("Workers AI answered with something that is not audio.",
                                code="not_audio") from None
        caller.stats.first_byte()
        return Response(audio, content_type=content_type)
    upstream_type = answer.content_type.split(";")[0].strip().lower()
    if not (upstream_type.startswith("audio/") or upstream_type == "application/octet-stream"):
        answer.stream.close()
        raise UpstreamError("Workers AI answered with something that is not audio.",
                            code="not_audio")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    length = answer.stream.headers.get("Content-Length")
    if length and answer.stream.headers.get("Content-Encoding", "identity") == "identity":
        headers["Content-Length"] = length
    config = current_app.config
    stream = relay_bytes(answer.stream, idle_timeout=config["UPSTREAM_READ_TIMEOUT"],
                         max_duration=config["STREAM_MAX_DURATION"], stats=caller.stats,
                         client_socket=request.environ.get("gunicorn.socket"))
    return Response(stream_with_context(stream), content_type=content_type, headers=headers)
