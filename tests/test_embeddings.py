"""POST /v1/embeddings: the translation (gateway/openai/embeddings.py) and the route.

The route runs in-process against the fake Workers AI, whose recorded requests show
what went upstream; every answer is checked against OpenAI's schemas.
"""
import base64
import struct

import pytest

from gateway.openai import embeddings
from tests.conftest import load_data
from tests.fake_media import vector_for
from tests.media_gateway import assert_refused, AUTH, media_client, run_requests, start_fake
from tests.openai_spec import validate, validate_error

BGE = "@cf/baai/bge-base-en-v1.5"
SMALL = "@cf/baai/bge-small-en-v1.5"
URL = "/v1/embeddings"


# ---------------------------------------------------------------- translation


@pytest.mark.parametrize("name, vectors", [
    pytest.param("cf_embeddings_bge.json", [[0.0125, -0.5, 0.25, 1.0], [-0.75, 0.5, 0.0, 0.125]],
                 id="shape-and-data"),
    pytest.param("cf_embeddings_m3_response.json", [[0.5, 0.25, -0.125], [0.0, -1.0, 0.75]],
                 id="bge-m3-response"),
])
def test_both_answer_shapes_are_read(name, vectors):
    assert embeddings.read_vectors(load_data(name), 2) == (vectors, None)


def test_cloudflare_usage_is_used_when_given():
    body = {"result": {"data": [[1.0, 2.0]], "shape": [1, 2], "usage": {"prompt_tokens": 7}}}
    assert embeddings.read_vectors(body, 1) == ([[1.0, 2.0]], 7)


@pytest.mark.parametrize("body", [
    pytest.param({"result": {"data": [[1.0]]}}, id="too-few-vectors"),
    pytest.param({"result": {"data": [[1.0], "x"]}}, id="not-a-vector"),
    pytest.param({"result": {"data": [[1.0], [True]]}}, id="boolean"),
    pytest.param({"result": {"data": [[1.0], [1.0, 2.0]]}}, id="ragged"),
    pytest.param({"result": {"data": [[1.0], []]}}, id="empty-vector"),
    pytest.param({"result": {"image": "abc"}}, id="no-vectors"),
    pytest.param({"result": "text"}, id="result-not-object"),
])
def test_unreadable_answers_are_refused(body):
    with pytest.raises(embeddings.UnreadableEmbeddings):
        embeddings.read_vectors(body, 2)


def test_base64_is_little_endian_float32_as_the_sdk_decodes_it():
    vector = [0.5, -1.25, 3.0]
    encoded = embeddings.encode(vector, "base64")
    assert list(struct.unpack("<3f", base64.b64decode(encoded))) == vector


def test_estimate_is_never_zero():
    assert embeddings.estimate_tokens(["a", "abcdefgh", "é" * 4]) == 1 + 2 + 2


def test_batches_keep_order():
    assert embeddings.batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_contexts_form_for_models_that_take_only_that():
    assert embeddings.payload(["a", "b"], "contexts") == {"contexts": [{"text": "a"},
                                                                       {"text": "b"}]}


# ---------------------------------------------------------------- route


@pytest.fixture(scope="module")
def fake():
    server = start_fake()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    fake.reset()
    return media_client(fake, MODEL_ALIASES={"text-embedding-3-small": BGE},
                        EMBEDDINGS_MAX_INPUTS=300)


def validate_embeddings(body):
    """OpenAI's schema types `embedding` as numbers; a base64 one is checked once decoded."""
    decoded = [{**item, "embedding": list(struct.unpack(
        f"<{len(base64.b64decode(item['embedding'])) // 4}f", base64.b64decode(item["embedding"])))}
        if isinstance(item["embedding"], str) else item for item in body["data"]]
    validate({**body, "data": decoded}, "CreateEmbeddingResponse")


def embed(client, **body):
    return client.post(URL, json=body, headers=AUTH)


def test_one_input(client, fake):
    rv = embed(client, model=BGE, input="hello")
    assert rv.status_code == 200, rv.get_data(as_text=True)
    body = rv.get_json()
    validate_embeddings(body)
    assert body["data"][0]["embedding"] == pytest.approx(vector_for("hello", 768))
    assert body["model"] == BGE
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}  # estimated: 5 bytes
    assert run_requests(fake)[0].json == {"text": ["hello"]}


def test_250_inputs_are_three_calls_in_order(client, fake):
    texts = [f"text number {i}" for i in range(250)]
    rv = embed(client, model=SMALL, input=texts, encoding_format="base64")
    assert rv.status_code == 200, rv.get_data(as_text=True)
    body = rv.get_json()
    validate_embeddings(body)
    assert [len(r.json["text"]) for r in run_requests(fake)] == [100, 100, 50]
    for index in (0, 99, 100, 249):
        item = body["data"][index]
        assert item["index"] == index
        decoded = struct.unpack("<384f", base64.b64decode(item["embedding"]))
        assert decoded == pytest.approx(vector_for(texts[index], 384), abs=1e-6)


def test_alias_is_echoed_and_dimensions_checked(client, fake):
    rv = embed(client, model="text-embedding-3-small", input=["a", "b"], dimensions=768)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert rv.get_json()["model"] == "text-embedding-3-small"
    assert run_requests(fake)[0].model == BGE


def bad(param, **body):
    return pytest.param(body, param, id=f"{param}-{'-'.join(map(str, body.values()))[:30]}")


@pytest.mark.parametrize("body, param", [
    pytest.param({"input": "x"}, "model", id="no-model"),
    pytest.param({"model": BGE}, "input", id="no-input"),
    pytest.param({"model": BGE, "input": ""}, "input", id="empty-string"),
    pytest.param({"model": BGE, "input": []}, "input", id="empty-list"),
    pytest.param({"model": BGE, "input": ["ok", ""]}, "input", id="empty-item"),
    pytest.param({"model": BGE, "input": [1, 2, 3]}, "input", id="token-ids"),
    pytest.param({"model": BGE, "input": [[1, 2], [3]]}, "input", id="token-id-arrays"),
    pytest.param({"model": BGE, "input": {"text": "x"}}, "input", id="object"),
    pytest.param({"model": BGE, "input": ["ok", 5]}, "input", id="number-item"),
    pytest.param({"model": BGE, "input": ["x"] * 301}, "input", id="over-max-inputs"),
    pytest.param({"model": BGE, "input": "x", "encoding_format": "int8"}, "encoding_format",
                 id="encoding-format"),
    pytest.param({"model": BGE, "input": "x", "dimensions": 512}, "dimensions",
                 id="dimensions-not-the-model's"),
    pytest.param({"model": BGE, "input": "x", "dimensions": 0}, "dimensions", id="dimensions-0"),
    pytest.param({"model": BGE, "input": "x", "dimensions": "768"}, "dimensions",
                 id="dimensions-string"),
    pytest.param({"model": "@cf/meta/llama-3.1-8b-instruct", "input": "x"}, "model",
                 id="chat-model"),
])
def test_bad_input_is_400_naming_the_parameter_with_nothing_upstream(client, fake, body, param):
    rv = embed(client, **body)
    assert_refused(rv, fake, param)


def test_unknown_model_is_404(client, fake):
    rv = embed(client, model="@cf/acme/nothing", input="x")
    assert rv.status_code == 404 and rv.get_json()["error"]["param"] == "model"
    assert run_requests(fake) == []


def test_embedding_model_on_chat_is_400_naming_model(client, fake):
    client.get("/v1/models", headers=AUTH)  # the catalogue is loaded at a worker's start-up
    rv = client.post("/v1/chat/completions", headers=AUTH,
                     json={"model": "text-embedding-3-small",
                           "messages": [{"role": "user", "content": "hi"}]})
    assert rv.status_code == 400, rv.get_data(as_text=True)
    error = rv.get_json()["error"]
    assert error["param"] == "model" and "Text Embeddings" in error["message"]
    assert run_requests(fake) == []


def test_unreadable_upstream_answer_is_502(client, fake):
    fake.add_fault("invalid_json", model=BGE, body='{"result": {"data": "nope"}}')
    rv = embed(client, model=BGE, input="x")
    assert rv.status_code == 502
    validate_error(rv.get_json())
