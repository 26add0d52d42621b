"""The /v1/responses routes with the Flask client: validation, storage, visibility, listing."""
import json

import pytest
import responses as mock

from tests.conftest import KEY, MODEL, RUN_URL, TestConfig, cf_ok
from tests.openai_spec import validate, validate_error

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
OTHER = {"Authorization": "Bearer sk-second-key"}


@pytest.fixture
def run(upstream):
    """Cloudflare answering every run of MODEL with the same short reply."""
    upstream.add(mock.POST, RUN_URL + MODEL, json=cf_ok({"response": "Echo", "usage": USAGE}))
    return upstream


def sent(upstream, index=-1):
    return json.loads(upstream.calls[index].request.body)


def create(client, auth, **fields):
    rv = client.post("/v1/responses", json={"model": MODEL, "input": "hi", **fields},
                     headers=auth, buffered=True)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    validate(rv.get_json(), "Response")
    return rv.get_json()


REFUSED = [
    pytest.param({"input": None}, "input", id="input-missing"),
    pytest.param({"input": ""}, "input", id="input-empty"),
    pytest.param({"input": []}, "input", id="input-empty-list"),
    pytest.param({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type",
                 id="item-reference"),
    pytest.param({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", id="bad-role"),
    pytest.param({"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
                 "input[0].content[0].type", id="input-file"),
    pytest.param({"input": [{"role": "user", "content": [{"type": "input_image",
                                                         "file_id": "f"}]}]},
                 "input[0].content[0].file_id", id="image-by-file-id"),
    pytest.param({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
                 "input[0].arguments", id="call-without-arguments"),
    pytest.param({"input": [{"type": "function_call_output", "output": "x"}]},
                 "input[0].call_id", id="output-without-call-id"),
    pytest.param({"model": "../etc"}, "model", id="model-path"),
    pytest.param({"temperature": 5.5}, "temperature", id="temperature-range"),
    pytest.param({"temperature": "1"}, "temperature", id="temperature-string"),
    pytest.param({"top_p": 3}, "top_p", id="top-p-range"),
    pytest.param({"max_output_tokens": 0}, "max_output_tokens", id="max-output-zero"),
    pytest.param({"max_output_tokens": 2.0}, "max_output_tokens", id="max-output-float"),
    pytest.param({"stream": "yes"}, "stream", id="stream-string"),
    pytest.param({"store": 1}, "store", id="store-number"),
    pytest.param({"tools": [{"type": "web_search"}]}, "tools[0].type", id="web-search"),
    pytest.param({"tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]},
                 "tools[1].type", id="file-search"),
    pytest.param({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name",
                 id="tool-name"),
    pytest.param({"tool_choice": {"type": "web_search_preview"}}, "tool_choice",
                 id="hosted-tool-choice"),
    pytest.param({"tool_choice": "required"}, "tool_choice", id="required-without-tools"),
    pytest.param({"tool_choice": {"type": "function", "name": "f"}, "tools": []}, "tool_choice",
                 id="named-choice-without-tools"),
    pytest.param({"text": {"format": {"type": "json_schema", "schema": {}}}},
                 "text.format.name", id="schema-without-name"),
    pytest.param({"text": {"format": {"type": "xml"}}}, "text.format.type", id="format-type"),
    pytest.param({"text": {"verbosity": "low"}}, "text.verbosity", id="verbosity"),
    pytest.param({"reasoning": {"effort": "huge"}}, "reasoning.effort", id="effort"),
    pytest.param({"metadata": {"k": 1}}, "metadata", id="metadata-value"),
    pytest.param({"metadata": {str(i): "v" for i in range(17)}}, "metadata",
                 id="metadata-17-keys"),
    pytest.param({"background": True}, "background", id="background"),
    pytest.param({"prompt": {"id": "pmpt_1"}}, "prompt", id="prompt-template"),
    pytest.param({"conversation": "conv_1"}, "conversation", id="conversation"),
    pytest.param({"top_logprobs": 2}, "top_logprobs", id="top-logprobs"),
    pytest.param({"previous_response_id": 7}, "previous_response_id", id="previous-id-type"),
]


@pytest.mark.parametrize("fields, param", REFUSED)
def test_bad_requests_are_refused_naming_the_param(client, auth, upstream, fields, param):
    body = {key: value for key, value in {"model": MODEL, "input": "hi", **fields}.items()
            if value is not None}
    rv = client.post("/v1/responses", json=body, headers=auth)
    assert rv.status_code == 400, rv.get_data(as_text=True)
    validate_error(rv.get_json())
    assert rv.get_json()["error"]["param"] == param
    assert len(upstream.calls) == 0


def test_verbosity_refusal_says_what_is_refused(client, auth, upstream):
    rv = client.post("/v1/responses", headers=auth, json={
        "model": MODEL, "input": "hi", "text": {"verbosity": "low"}})
    message = rv.get_json()["error"]["message"]
    assert "other than 'medium'" in message and "Only 'medium'" not in message


def test_non_function_tools_are_named_in_the_message(client, auth, upstream):
    rv = client.post("/v1/responses", headers=auth, json={
        "model": MODEL, "input": "hi", "tools": [{"type": "code_interpreter"}]})
    assert "'code_interpreter'" in rv.get_json()["error"]["message"]


def test_chat_errors_name_the_responses_param(client, auth, upstream):
    long_input = "x" * (TestConfig.MAX_INPUT_CHARS + 1)
    rv = client.post("/v1/responses", json={"model": MODEL, "input": long_input}, headers=auth)
    assert rv.status_code == 400 and rv.get_json()["error"]["param"] == "input"
    rv = client.post("/v1/responses", json={"model": "@cf/nobody/nothing", "input": "hi"},
                     headers=auth)
    assert rv.status_code == 404 and rv.get_json()["error"]["param"] == "model"
    assert len(upstream.calls) == 0


def test_function_call_output_must_answer_a_call(client, auth, upstream):
    """As OpenAI: an output for a call no earlier item made is a 400 naming that input item,
    and nothing goes upstream; with its call before it, it goes through."""
    orphan = {"type": "function_call_output", "call_id": "call_x", "output": "42"}
    rv = client.post("/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": "hi"}, orphan]}, headers=auth)
    assert rv.status_code == 400, rv.get_data(as_text=True)
    error = rv.get_json()["error"]
    assert error["param"] == "input[1]" and error["type"] == "invalid_request_error"
    assert not [c for c in upstream.calls if "/ai/run/" in c.request.url]


def test_answer_is_stored_retrievable_listable_and_deletable_by_its_key_only(client, auth, run):
    response = create(client, auth, instructions="Be kind.", metadata={"t": "1"})
    assert sent(run)["messages"] == [{"role": "system", "content": "Be kind."},
                                     {"role": "user", "content": "hi"}]
    assert response["output"][0]["content"][0]["text"] == "Echo"
    path = f"/v1/responses/{response['id']}"
    assert client.get(path, headers=auth).get_json() == response
    items = client.get(f"{path}/input_items", headers=auth).get_json()
    validate(items, "ResponseItemList")
    assert [item["content"][0]["text"] for item in items["data"]] == ["hi"]
    for other_path in (path, f"{path}/input_items"):
        rv = client.get(other_path, headers=OTHER)
        assert rv.status_code == 404 and validate_error(rv.get_json()) is None
        assert response["id"] in rv.get_json()["error"]["message"]
    assert client.delete(path, headers=OTHER).status_code == 404
    assert client.delete(path, headers=auth).get_json() == {
        "id": response["id"], "object": "response", "deleted": True}
    assert client.get(path, headers=auth).status_code == 404
    assert client.delete(path, headers=auth).status_code == 404


def test_previous_response_id_sends_the_conversation_without_old_instructions(client, auth, run):
    first = create(client, auth, input="one", instructions="Old rules.")
    second = create(client, auth, input="two", previous_response_id=first["id"])
    third = create(client, auth, input=[{"role": "user", "content": "three"}],
                   previous_response_id=second["id"], instructions="New rules.")
    assert [(m["role"], m["content"]) for m in sent(run)["messages"]] == [
        ("system", "New rules."), ("user", "one"), ("assistant", "Echo"), ("user", "two"),
        ("assistant", "Echo"), ("user", "three")]
    assert third["previous_response_id"] == second["id"]
    client.delete(f"/v1/responses/{first['id']}", headers=auth)  # the chain keeps its copy
    rv = client.get(f"/v1/responses/{third['id']}/input_items?order=asc&limit=2", headers=auth)
    page = rv.get_json()
    assert [item["role"] for item in page["data"]] == ["user", "assistant"]
    assert page["has_more"] is True and page["first_id"] == page["data"][0]["id"]
    rest = client.get(f"/v1/responses/{third['id']}/input_items?order=asc&limit=100"
                      f"&after={page['last_id']}", headers=auth).get_json()
    assert [item["role"] for item in rest["data"]] == ["user", "assistant", "user"]
    assert rest["has_more"] is False
    newest = client.get(f"/v1/responses/{third['id']}/input_items", headers=auth).get_json()
    assert newest["data"][0]["content"][0]["text"] == "three"


def test_previous_response_of_another_key_or_unknown_is_404(client, auth, run):
    first = create(client, auth)
    for headers, previous in ((OTHER, first["id"]), (auth, "resp_unknown")):
        rv = client.post("/v1/responses", headers=headers, json={
            "model": MODEL, "input": "x", "previous_response_id": previous})
        assert rv.status_code == 404
        assert rv.get_json()["error"]["param"] == "previous_response_id"
        assert rv.get_json()["error"]["code"] == "previous_response_not_found"
    assert len(run.calls) == 1


def test_store_false_is_not_kept(client, auth, run):
    response = create(client, auth, store=False)
    assert response["store"] is False
    assert client.get(f"/v1/responses/{response['id']}", headers=auth).status_code == 404


def test_stored_responses_expire_after_their_ttl(app, client, auth, run):
    response = create(client, auth)
    path = f"/v1/responses/{response['id']}"
    assert client.get(path, headers=auth).status_code == 200
    state = app.extensions["state"]
    later = state.clock() + TestConfig.RESPONSES_TTL + 1
    state.clock = lambda: later
    assert client.get(path, headers=auth).status_code == 404


@pytest.mark.parametrize("query, param", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("order=up", "order"),
    ("after=msg_nope", "after")], ids=lambda value: value)
def test_bad_list_queries_are_400(client, auth, run, query, param):
    response = create(client, auth)
    rv = client.get(f"/v1/responses/{response['id']}/input_items?{query}", headers=auth)
    assert rv.status_code == 400 and rv.get_json()["error"]["param"] == param


def test_keys_are_never_stored(app, client, auth, run, tmp_path):
    create(client, auth)
    assert app.config["STATE_URL"] == f"sqlite:///{tmp_path}/state.db"
    files = list(tmp_path.glob("state.db*"))
    assert files and all(KEY.encode() not in path.read_bytes() for path in files)


class FewMessages(TestConfig):
    MAX_MESSAGES = 3


@pytest.mark.parametrize("config_class", [FewMessages], ids=["max-messages-3"])
def test_message_limits_hold_for_the_input_and_the_whole_conversation(client, auth, run):
    too_many = [{"role": "user", "content": "x"}] * 4
    rv = client.post("/v1/responses", json={"model": MODEL, "input": too_many}, headers=auth)
    assert rv.status_code == 400 and rv.get_json()["error"]["param"] == "input"
    assert rv.get_json()["error"]["code"] == "array_above_max_length"
    first = create(client, auth, input=[{"role": "user", "content": "x"}] * 2)
    rv = client.post("/v1/responses", headers=auth, json={
        "model": MODEL, "input": "y", "previous_response_id": first["id"]})
    assert rv.status_code == 400 and rv.get_json()["error"]["code"] == "array_above_max_length"
    assert len(run.calls) == 1


def test_responses_routes_share_one_metrics_label_and_count_tokens(client, auth, run):
    from tests.test_metrics import Watch
    watch = Watch(client)
    response = create(client, auth)
    client.get(f"/v1/responses/{response['id']}/input_items", headers=auth, buffered=True)
    route = "/v1/responses"
    assert watch.increase("gateway_requests_total", route=route, status="200", model=MODEL) == 1
    assert watch.increase("gateway_requests_total", route=route, status="200", model="") == 1
    assert watch.increase("gateway_tokens_total", direction="completion", model=MODEL) == 2
