"""POST /v1/chat/completions."""
from flask import Blueprint

from gateway.openai import translate
from gateway.openai.generation import generate
from schemas import chat_request

bp = Blueprint("chat", __name__)


@bp.post("/chat/completions")
def create_chat_completion():
    """A chat completion from Workers AI, as one object or as an SSE stream."""
    return generate("chat", chat_request, translate.chat_payload, translate.chat_completion)
