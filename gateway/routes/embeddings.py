"""POST /v1/embeddings."""
from flask import Blueprint, current_app

from gateway import jsonio
from gateway.cloudflare.catalogue import TEXT_EMBEDDINGS
from gateway.errors import InvalidRequestError, UpstreamError
from gateway.openai import embeddings
from gateway.openai.calls import Caller, json_request, start
from schemas import embedding_request

bp = Blueprint("embeddings", __name__)


@bp.post("/embeddings")
def create_embeddings():
    """Vectors for one or many texts, in OpenAI's shape, in the order they were sent.

    More texts than the model takes in one call are split into several calls, run
    concurrently (UPSTREAM_FANOUT at a time).
    """
    data = json_request(embedding_request)
    texts = data["input"]
    _check_sizes(texts)
    resolved = start(data["model"], TEXT_EMBEDDINGS, len(texts), sum(map(len, texts)))
    dimension = embeddings.dimension_of(resolved.record)
    wanted = data.get("dimensions")
    if wanted is not None and dimension is not None and wanted != dimension:
        raise _dimension_error(data["model"], dimension)
    caller = Caller(resolved.name)

    def embed(batch):
        answer = caller.run(embeddings.payload(batch))
        try:
            return embeddings.read_vectors(answer.body, len(batch))
        except embeddings.UnreadableEmbeddings:
            raise UpstreamError("Workers AI answered with a body the gateway could not read "
                                "as embeddings.") from None

    results = caller.map(embed, embeddings.batches(texts, embeddings.PER_CALL))
    vectors = [vector for batch_vectors, _ in results for vector in batch_vectors]
    if wanted is not None and wanted != len(vectors[0]):
        raise _dimension_error(data["model"], len(vectors[0]))
    counted = [tokens for _, tokens in results]
    tokens = sum(counted) if None not in counted else embeddings.estimate_tokens(texts)
    caller.stats.prompt_tokens = tokens
    return jsonio.json_response(embeddings.embedding_list(
        vectors, model=data["model"], prompt_tokens=tokens,
        encoding_format=data["encoding_format"]))


def _check_sizes(texts):
    limit = current_app.config["EMBEDDINGS_MAX_INPUTS"]
    if len(texts) > limit:
        raise InvalidRequestError(f"'input' holds {len(texts)} items; this gateway accepts at "
                                  f"most {limit} in one request.", param="input")
    longest = current_app.config["MAX_INPUT_CHARS"]
    for index, text in enumerate(texts):
        if len(text) > longest:
            raise InvalidRequestError(
                f"Input {index} is {len(text)} characters long; this gateway accepts at most "
                f"{longest} per input.", param="input", code="context_length_exceeded")


def _dimension_error(model, dimension):
    return InvalidRequestError(
        f"The model '{model}' makes vectors of {dimension} dimensions; 'dimensions' must be "
        f"{dimension} or left out.", param="dimensions")
