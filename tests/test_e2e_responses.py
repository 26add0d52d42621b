"""End to end: the Responses API on gunicorn + gevent (2 workers), the fake Workers AI (its
model families for tools, structured output and reasoning), the official OpenAI SDK and the
OpenAI Agents SDK; every response object and stream event checked against OpenAI's schemas."""
import asyncio
import json

import openai
import pytest
import requests
from pydantic import BaseModel

from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import validate, validate_error
from tests.servers import run_gateway

KEY = "sk-e2e-responses-key-0123456789"
OTHER_KEY = "sk-e2e-responses-other-key"
TOKEN = "cf-e2e-responses-token-abcdef"
ACCOUNT = "acct-e2e-responses"
CLASSIC = "@cf/meta/llama-3.1-8b-instruct"
SHAPED = "@cf/google/gemma-4-26b-a4b-it"


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts={ACCOUNT: TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-responses")
    settings = {"API_KEYS": f"{KEY},{OTHER_KEY}", "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
                "CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_API_BASE": fake.base_url,
                "UPSTREAM_RETRIES": "0", "STATE_URL": f"sqlite:///{folder}/state.db",
                "STREAM_HEARTBEAT": "0.2", "UPSTREAM_READ_TIMEOUT": "2"}
    with run_gateway(settings, folder / "gateway.log", workers=2) as (base_url, _):
        yield base_url
    log = (folder / "gateway.log").read_text(errors="replace")
    assert KEY not in log and TOKEN not in log, "a secret reached the gateway log"
    assert "Traceback" not in log, log


@pytest.fixture(autouse=True)
def clean_fake(fake):
    fake.reset()


def sdk(gateway, key=KEY):
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture
def client(gateway):
    return sdk(gateway)


def raw(gateway, body, heartbeats=None):
    """POST /v1/responses with requests: the exact JSON, or the exact stream events."""
    rv = requests.post(f"{gateway}/v1/responses", json=body, stream=bool(body.get("stream")),
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    if not body.get("stream"):
        validate(rv.json(), "Response")
        return rv.json()
    assert rv.headers["Content-Type"].startswith("text/event-stream")
    if heartbeats is not None:
        heartbeats.append(rv.content.count(b"\n\n: keep-alive\n\n"))
    events = []
    for block in rv.content.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            assert lines[0] == "event: " + json.loads(lines[1][6:])["type"], block
            events.append(json.loads(lines[1][6:]))
    assert "[DONE]" not in rv.content.decode()
    for event in events:
        validate(event, "ResponseStreamEvent")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def upstream_messages(fake):
    runs = [r for r in fake.requests if r.model]
    return [(m["role"], m["content"]) for m in runs[-1].json["messages"]]


@pytest.mark.parametrize("model", [CLASSIC, SHAPED])
def test_create_with_a_string_and_with_items(client, gateway, fake, model):
    response = client.responses.create(model=model, input="hello there")
    assert response.output_text == "Echo: hello there" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == model
    assert response.usage.output_tokens == 3 and response.usage.input_tokens > 0
    items = [{"role": "developer", "content": "Answer shortly."},
             {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
             {"role": "assistant", "content": "Echo: first"},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "second one"}]}]
    response = client.responses.create(model=model, input=items, instructions="Be kind.")
    assert response.output_text == "Echo: second one"
    assert upstream_messages(fake)[:2] == [("system", "Be kind."), ("system", "Answer shortly.")]
    raw(gateway, {"model": model, "input": items})


@pytest.mark.parametrize("model", [CLASSIC, SHAPED])
def test_stream_events_in_order_with_the_non_stream_text(client, gateway, model):
    prompt = "stream me please"
    whole = client.responses.create(model=model, input=prompt).output_text
    with client.responses.stream(model=model, input=prompt) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * deltas + [
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole
    assert final.output_text == whole and final.usage.output_tokens == 4
    events = raw(gateway, {"model": model, "input": prompt, "stream": True})
    validate(events[-1]["response"], "Response")
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == whole


def test_max_output_tokens_reached_is_incomplete_streamed_and_not(client, gateway):
    response = client.responses.create(model=CLASSIC, input="[[tokens=9]]", max_output_tokens=3)
    assert response.status == "incomplete" and response.output_text == "t0 t1 t2"
    assert response.incomplete_details.reason == "max_output_tokens"
    events = raw(gateway, {"model": SHAPED, "input": "[[tokens=9]]", "max_output_tokens": 3,
                           "stream": True})
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_previous_response_id_chains_three_turns_across_workers(client, fake):
    first = client.responses.create(model=CLASSIC, input="one", instructions="Rules.")
    second = client.responses.create(model=CLASSIC, input="two", previous_response_id=first.id)
    with client.responses.stream(model=SHAPED, input="three",
                                 previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert third.output_text == "Echo: three" and third.previous_response_id == second.id
    assert upstream_messages(fake) == [("user", "one"), ("assistant", "Echo: one"),
                                       ("user", "two"), ("assistant", "Echo: two"),
                                       ("user", "three")]
    fourth = client.responses.create(model=CLASSIC, input="four", previous_response_id=third.id)
    assert upstream_messages(fake)[-3:] == [("user", "three"), ("assistant", "Echo: three"),
                                            ("user", "four")]
    assert fourth.output_text == "Echo: four"


def test_retrieve_list_delete_and_another_keys_404(client, gateway):
    created = client.responses.create(model=CLASSIC, input="keep me", metadata={"run": "e2e"})
    again = client.responses.retrieve(created.id)
    assert again.output_text == "Echo: keep me" and again.metadata == {"run": "e2e"}
    items = client.responses.input_items.list(created.id)
    assert [item.content[0].text for item in items.data] == ["keep me"]
    http = requests.get(f"{gateway}/v1/responses/{created.id}/input_items",
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    validate(http.json(), "ResponseItemList")
    validate(requests.get(f"{gateway}/v1/responses/{created.id}", timeout=10,
                          headers={"Authorization": f"Bearer {KEY}"}).json(), "Response")
    other = sdk(gateway, OTHER_KEY)
    for call in (lambda: other.responses.retrieve(created.id),
                 lambda: other.responses.input_items.list(created.id),
                 lambda: other.responses.delete(created.id),
                 lambda: other.responses.create(model=CLASSIC, input="x",
                                                previous_response_id=created.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        validate_error(caught.value.response.json())
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_cloudflare_failing_mid_stream_ends_with_response_failed(fake, gateway):
    fake.add_fault("error_event", after=3)
    events = raw(gateway, {"model": CLASSIC, "input": "stream me please", "stream": True})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_cloudflare_going_silent_mid_stream_times_out_as_response_failed(fake, gateway):
    fake.add_fault("stall", after=3, delay=8)
    beats = []
    events = raw(gateway, {"model": SHAPED, "input": "stream me please", "stream": True},
                 heartbeats=beats)
    assert events[-1]["type"] == "response.failed" and beats[0] >= 2
    assert events[-1]["response"]["error"] == {
        "code": "server_error", "message": "Workers AI went silent mid-stream."}


def test_bad_requests_are_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CLASSIC, input="x", tools=[{"type": "web_search"}])
    body = caught.value.response.json()
    validate_error(body)
    assert body["error"]["param"] == "tools[0].type" and "web_search" in body["error"]["message"]


def test_heartbeats_while_cloudflare_is_silent_and_the_sdk_ignores_them(client, gateway):
    beats = []
    events = raw(gateway, {"model": CLASSIC, "input": "[[delay=0.7]] slow words", "stream": True},
                 heartbeats=beats)
    assert beats[0] >= 2 and events[-1]["type"] == "response.completed"
    with client.responses.stream(model=CLASSIC, input="[[delay=0.5]] slow words") as stream:
        assert stream.get_final_response().output_text == "Echo: slow words"


def test_a_client_leaving_mid_stream_closes_the_upstream_and_stores_nothing(fake, gateway):
    headers = {"Authorization": f"Bearer {KEY}"}
    with requests.post(f"{gateway}/v1/responses", headers=headers, stream=True, timeout=30,
                       json={"model": CLASSIC, "input": "[[tokens=100]] [[delay=0.1]]",
                             "stream": True}) as rv:
        lines = rv.iter_lines()
        assert next(lines) == b"event: response.created"
        response_id = json.loads(next(lines)[len(b"data: "):])["response"]["id"]
    assert fake.wait_for(lambda f: f.streams_aborted == 1, timeout=20)
    assert fake.streams_completed == 0
    rv = requests.get(f"{gateway}/v1/responses/{response_id}", headers=headers, timeout=10)
    assert rv.status_code == 404


# --- tools, structured output, reasoning, the Agents SDK -------------------------------------

CLASSIC_TOOLS = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
REASONING = "@cf/zai-org/glm-4.7-flash"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}


def call_and_result(response):
    """The one function call of a response, and the input items that answer it."""
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "London"}
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Rainy, 12°C"}
    return calls[0], result


@pytest.mark.parametrize("model", [CLASSIC_TOOLS, SHAPED])
def test_function_tool_round_trip(client, fake, model):
    question = [{"role": "user", "content": "What is the weather in London?"}]
    first = client.responses.create(model=model, input=question, tools=[WEATHER])
    assert first.status == "completed" and first.output_text == ""
    call, result = call_and_result(first)
    assert call.call_id and call.id.startswith("fc_") and call.status == "completed"
    final = client.responses.create(model=model, tools=[WEATHER],
                                    input=question + [call.model_dump(exclude_none=True), result])
    assert final.output_text == "Result: Rainy, 12°C"
    sent = [r.json for r in fake.requests if r.model][-1]["messages"]
    assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["function"]["name"] == \
        "get_weather"
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == "Rainy, 12°C"


@pytest.mark.parametrize("model", [CLASSIC_TOOLS, SHAPED])
def test_function_tool_round_trip_streamed_with_previous_response_id(client, gateway, model):
    with client.responses.stream(model=model, input="Weather in London?", tools=[WEATHER]) as s:
        events = list(s)
        first = s.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    streamed = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    call, result = call_and_result(first)
    assert streamed == call.arguments
    with client.responses.stream(model=model, input=[result], tools=[WEATHER],
                                 previous_response_id=first.id) as s:
        final = s.get_final_response()
    assert final.output_text == "Result: Rainy, 12°C"
    events = raw(gateway, {"model": model, "input": "Weather in London?", "tools": [WEATHER],
                           "stream": True})
    assert events[-1]["response"]["output"][0]["type"] == "function_call"


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("model", [CLASSIC_TOOLS, SHAPED])
def test_text_format_json_schema(client, gateway, fake, model):
    parsed = client.responses.parse(model=model, input="The weather, as JSON.",
                                    text_format=Weather)
    assert parsed.output_parsed == Weather(city="London", celsius=42)
    fmt = [r.json for r in fake.requests if r.model][-1]["response_format"]
    assert "celsius" in json.dumps(fmt)
    body = raw(gateway, {"model": model, "input": "JSON please", "text": {"format": {
        "type": "json_schema", "name": "weather", "schema": Weather.model_json_schema()}}})
    assert body["text"]["format"]["name"] == "weather"
    assert json.loads(body["output"][0]["content"][0]["text"]) == {"city": "London", "celsius": 42}


def test_reasoning_effort_gives_a_reasoning_item_streamed_and_not(client, gateway):
    response = client.responses.create(model=REASONING, input="Why is the sky blue?",
                                       reasoning={"effort": "low"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == "Thinking about: Why is the sky blue?"
    assert response.output_text == "Echo: Why is the sky blue?"
    events = raw(gateway, {"model": REASONING, "input": "Why is the sky blue?", "stream": True,
                           "reasoning": {"effort": "low"}})
    kinds = [event["type"] for event in events]
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" in kinds
    validate(events[-1]["response"], "Response")
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["reasoning", "message"]


@pytest.mark.parametrize("feature, param", [
    ({"tools": [WEATHER]}, "tools"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format"),
    ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
], ids=["tools", "json-mode", "reasoning-effort"])
def test_a_feature_the_model_lacks_is_refused_naming_the_responses_param(client, fake, feature,
                                                                          param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CLASSIC, input="x", **feature)
    body = caught.value.response.json()
    validate_error(body)
    assert body["error"]["param"] == param and CLASSIC in body["error"]["message"]
    assert not [r for r in fake.requests if "/ai/run/" in r.path]


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agents_sdk_runs_an_agent_with_one_function_tool(gateway, fake, streamed):
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    asked = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}"

    async def run():
        openai_client = AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0,
                                    timeout=30)
        agent = Agent(name="forecaster", instructions="Answer with the weather tool.",
                      tools=[get_weather], model=OpenAIResponsesModel(SHAPED, openai_client))
        if not streamed:
            return (await Runner.run(agent, "What is the weather in London?")).final_output
        result = Runner.run_streamed(agent, "What is the weather in London?")
        async for _ in result.stream_events():
            pass
        return result.final_output

    assert asyncio.run(run()) == "Result: Sunny in London"
    assert asked == ["London"]
    assert upstream_messages(fake)[0] == ("system", "Answer with the weather tool.")


def test_input_image_parts_reach_a_vision_model(client, fake):
    pixel = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4" \
            "z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
    response = client.responses.create(model=SHAPED, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": pixel}]}])
    assert response.output_text == "Echo: What is this? [images: 1]"
    items = client.responses.input_items.list(response.id)
    assert items.data[0].content[1].type == "input_image"
