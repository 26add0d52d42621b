"""POST /v1/completions (the legacy text completions API)."""
from flask import Blueprint

from gateway.openai import translate
from gateway.openai.generation import generate
from schemas import completion_request

bp = Blueprint("completions", __name__)


@bp.post("/completions")
def create_completion():
    """A text completion from Workers AI, as one object or as an SSE stream."""
    return generate("completion", completion_request, translate.completion_payload,
                    translate.text_completion)
