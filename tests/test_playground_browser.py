"""The playground and CORS in a real browser: headless Chromium (tests/browser.py) against the
real gunicorn + gevent gateway and the fake Workers AI.

One gateway, one fake and one browser session serve the whole module. The gateway's
CORS_ORIGINS lists one "other site" (a tiny page on its own port) and not a second one,
so the same run shows a cross-origin streamed fetch() that works and one the browser blocks.
The screenshot of the page after a streamed answer is written to
test-artifacts/playground.png (or $PLAYGROUND_SCREENSHOT); docs/playground.png is a copy.
"""
import os
import time
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from gateway.cloudflare.catalogue import SERVED_TASKS
from tests import browser as chrome
from tests.fake_workers_ai import FakeWorkersAI, _reply_tokens
from tests.servers import ROOT, run_gateway

KEY = "sk-browser-client-key-0123456789"
TOKEN = "cf-browser-token-abcdef987654"
ACCOUNT = "acct-browser-1"
MODEL = "@cf/meta/llama-3.1-8b-instruct"
SCREENSHOT = Path(os.environ.get("PLAYGROUND_SCREENSHOT")
                  or ROOT / "test-artifacts" / "playground.png")
WAIT = 60  # seconds: generous, the machine is shared

OTHER_SITE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>another site</title></head><body>
<p>A page of another origin that calls the gateway with fetch().</p>
<script>
window.streamChat = async (gateway, key, model, prompt) => {
  const result = {ok: false, status: null, text: "", reads: 0, requestId: null, error: null};
  try {
    const response = await fetch(gateway + "/v1/chat/completions", {
      method: "POST",
      // the headers OpenAI's JavaScript SDK adds in a browser (dangerouslyAllowBrowser)
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json",
                "X-Stainless-Lang": "js", "X-Stainless-OS": "Unknown",
                "X-Stainless-Retry-Count": "0", "X-Stainless-Timeout": "600",
                "OpenAI-Organization": "org-1", "OpenAI-Project": "proj-1"},
      body: JSON.stringify({model, stream: true, messages: [{role: "user", content: prompt}]}),
    });
    result.status = response.status;
    result.requestId = response.headers.get("X-Request-ID");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let grew = false, end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
        const choice = (JSON.parse(event.slice(6)).choices || [])[0];
        if (choice && choice.delta && choice.delta.content) {
          result.text += choice.delta.content;
          grew = true;
        }
      }
      if (grew) result.reads += 1;
    }
    result.ok = response.ok;
  } catch (error) {
    result.error = String(error);
  }
  return result;
};
</script></body></html>
"""


def echo(prompt):
    """What the fake answers to `prompt` (its deterministic reply, directives applied)."""
    return "".join(_reply_tokens(prompt))


@pytest.fixture(scope="module")
def chromium():
    return chrome.ensure_chromium()


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts={ACCOUNT: TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def sites():
    """Two other origins: the first is listed in CORS_ORIGINS, the second is not."""
    with chrome.serve_page(OTHER_SITE) as allowed, chrome.serve_page(OTHER_SITE) as refused:
        yield allowed, refused


@pytest.fixture(scope="module")
def gateway(fake, sites, tmp_path_factory):
    settings = {"API_KEYS": KEY, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT, "CLOUDFLARE_API_TOKEN": TOKEN,
                "CLOUDFLARE_API_BASE": fake.base_url, "UPSTREAM_RETRIES": "0",
                "CORS_ORIGINS": sites[0], "LOG_FORMAT": "json"}
    with run_gateway(settings, tmp_path_factory.mktemp("browser") / "gateway.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def driver(chromium):
    session = chrome.start_chrome(*chromium)
    yield session
    session.quit()


@pytest.fixture(autouse=True)
def clean_fake(fake):
    fake.reset()


# -- page helpers ---------------------------------------------------------------------------

def hook(driver, name):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def text_of(driver, name):
    return hook(driver, name).get_property("textContent")


def stat(driver, name):
    """One figure of the stats panel, or None while it is not shown."""
    found = driver.find_elements(By.CSS_SELECTOR, f'[data-testid="stats"] dd[data-stat="{name}"]')
    return found[0].get_property("textContent") if found else None


def open_page(driver, gateway, key=KEY):
    """A fresh page (nothing left in sessionStorage) with `key` typed and submitted."""
    driver.get(gateway + "/")
    driver.execute_script("sessionStorage.clear(); localStorage.clear();")
    driver.get(gateway + "/")
    if key is not None:
        field = hook(driver, "api-key")
        field.clear()
        field.send_keys(key, Keys.ENTER)


def wait_for_models(driver):
    WebDriverWait(driver, WAIT).until(lambda d: hook(d, "model-select").is_enabled())
    return [o.get_attribute("value") for o in Select(hook(driver, "model-select")).options]


def ask(driver, prompt, model=MODEL, system="", temperature="", max_tokens=""):
    Select(hook(driver, "model-select")).select_by_value(model)
    for element, value in ((driver.find_element(By.ID, "system"), system),
                           (hook(driver, "prompt"), prompt),
                           (driver.find_element(By.ID, "temperature"), temperature),
                           (driver.find_element(By.ID, "max-tokens"), max_tokens)):
        element.clear()
        if value:
            element.send_keys(value)
    hook(driver, "send").click()


def finished(driver):
    return hook(driver, "send").is_enabled() and stat(driver, "total") is not None


def wait_until_finished(driver):
    WebDriverWait(driver, WAIT, poll_frequency=0.05).until(finished)


# -- the page -------------------------------------------------------------------------------

def test_page_loads_clean_and_lists_the_fakes_models(driver, gateway, fake):
    open_page(driver, gateway)
    shown = wait_for_models(driver)
    served = requests.get(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                          timeout=30).json()["data"]
    assert shown == [entry["id"] for entry in served]
    # every model of the tasks the gateway serves (issue 12), each labelled with its task
    assert set(shown) == {m["name"] for m in fake.models if m["task"]["name"] in SERVED_TASKS}

    Select(hook(driver, "model-select")).select_by_value(MODEL)
    meta = next(entry["metadata"] for entry in served if entry["id"] == MODEL)
    facts = {dd.get_attribute("data-stat"): dd.get_property("textContent")
             for dd in driver.find_elements(By.CSS_SELECTOR, "#model-info dd")}
    assert facts["task"] == meta["task"] == "Text Generation"
    assert facts["context_window"] == f"{meta['context_window']:,} tokens"
    # The list leaves capabilities out; the page asks GET /v1/models/{id} for them.
    one = requests.get(f"{gateway}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {KEY}"},
                       timeout=30).json()["metadata"]
    expected = ", ".join(name.replace("_", " ") for name, on in one["capabilities"].items() if on)
    assert expected
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, '#model-info dd[data-stat="capabilities"]'))
    assert driver.find_element(By.CSS_SELECTOR, '#model-info dd[data-stat="capabilities"]'
                               ).get_property("textContent") == expected

    storage = driver.execute_script(
        "return [sessionStorage.getItem('cf-ai-endpoint.playground.key'), localStorage.length,"
        " document.cookie]")
    assert storage == [KEY, 0, ""], "the key lives in sessionStorage only"
    problems = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == [], problems


def test_answer_streams_into_the_page_with_its_figures(driver, gateway, fake):
    prompt = "Hello! In one sentence, what does this gateway do for my OpenAI tools?"
    expected = echo(prompt)
    fake.token_delay = 0.12  # seconds between tokens (a directive would show in the screenshot)
    open_page(driver, gateway)
    wait_for_models(driver)
    ask(driver, prompt, system="Answer briefly.", temperature="0.3", max_tokens="200")

    seen = []
    deadline = time.monotonic() + WAIT
    while not finished(driver) and time.monotonic() < deadline:
        text = text_of(driver, "answer")
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        time.sleep(0.03)
    final = text_of(driver, "answer")
    assert final == expected
    partial = [text for text in seen if text != final]
    assert len(partial) >= 3, f"the answer did not grow token by token: {seen}"
    assert all(expected.startswith(text) for text in seen)
    assert [len(text) for text in seen] == sorted({len(text) for text in seen})

    body = fake.requests[-1].json
    assert body["stream"] is True and body["temperature"] == 0.3 and body["max_tokens"] == 200
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert stat(driver, "completion_tokens") == str(len(_reply_tokens(prompt)))
    assert int(stat(driver, "prompt_tokens")) > 0
    assert stat(driver, "ttft").endswith(" ms") and float(stat(driver, "tokens_per_second")) > 0
    assert stat(driver, "finish_reason") == "stop"
    assert hook(driver, "error").is_displayed() is False

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_stop_ends_a_long_stream_and_the_upstream_one(driver, gateway, fake):
    open_page(driver, gateway)
    wait_for_models(driver)
    ask(driver, "[[tokens=3000]] [[delay=0.05]]")  # 150 s if nobody stops it
    WebDriverWait(driver, WAIT).until(lambda d: len(text_of(d, "answer")) > 12)
    assert hook(driver, "stop").is_enabled()
    hook(driver, "stop").click()

    WebDriverWait(driver, WAIT).until(finished)
    assert stat(driver, "finish_reason") == "stopped"
    assert fake.wait_for(lambda f: f.streams_aborted == 1, timeout=WAIT), \
        "the gateway kept reading Workers AI after the browser stopped"
    assert fake.streams_completed == 0
    stopped_at = text_of(driver, "answer")
    time.sleep(0.5)
    assert text_of(driver, "answer") == stopped_at
    assert stopped_at.startswith("t0 t1 t2") and len(stopped_at.split()) < 3000
    assert hook(driver, "stop").is_enabled() is False


def test_wrong_key_shows_invalid_api_key(driver, gateway, fake):
    open_page(driver, gateway, key="sk-not-a-key-of-this-gateway")
    WebDriverWait(driver, WAIT).until(lambda d: hook(d, "error").is_displayed())
    assert text_of(driver, "error").startswith("invalid_api_key: Incorrect API key provided.")
    assert not hook(driver, "model-select").is_enabled()

    # A key that goes wrong after the models were loaded: the chat request shows it too.
    field = hook(driver, "api-key")
    field.clear()
    field.send_keys(KEY, Keys.ENTER)
    wait_for_models(driver)
    field.clear()
    field.send_keys("sk-typo")
    ask(driver, "Hello")
    WebDriverWait(driver, WAIT).until(finished)
    assert text_of(driver, "error").startswith("invalid_api_key: ")
    assert text_of(driver, "answer") == ""
    assert not any(r.path.endswith(MODEL) for r in fake.requests), "nothing went upstream"


def test_markup_in_an_answer_is_shown_as_text(driver, gateway):
    prompt = '<img src=x onerror="window.pwned=1"><b>bold</b><script>window.pwned=2</script>'
    open_page(driver, gateway)
    wait_for_models(driver)
    ask(driver, prompt)
    wait_until_finished(driver)
    assert text_of(driver, "answer") == echo(prompt)
    assert "<img src=x onerror=" in text_of(driver, "answer")
    assert hook(driver, "answer").find_elements(By.CSS_SELECTOR, "*") == []
    assert driver.execute_script("return [window.pwned, document.images.length]") == [None, 0]


# -- CORS, from pages of two other origins --------------------------------------------------

def call_from(driver, site, gateway, prompt):
    driver.get(site + "/")
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.streamChat(arguments[0], arguments[1], arguments[2], arguments[3]).then(done);",
        gateway, KEY, MODEL, prompt)


def test_listed_origin_streams_cross_origin(driver, gateway, sites):
    prompt = "Streamed to another site, chunk by chunk [[delay=0.1]]"
    result = call_from(driver, sites[0], gateway, prompt)
    assert result["error"] is None, result
    assert result["ok"] and result["status"] == 200
    assert result["text"] == echo(prompt)
    assert result["reads"] >= 3, "the body arrived in one piece, not as a stream"
    assert result["requestId"], "X-Request-ID is exposed to the other origin"


def test_unlisted_origin_is_blocked_by_the_browser(driver, gateway, sites, fake):
    result = call_from(driver, sites[1], gateway, "Should never reach Workers AI")
    assert result["status"] is None and result["text"] == ""
    assert "TypeError" in result["error"], result
    blocked = [e["message"] for e in driver.get_log("browser") if "CORS policy" in e["message"]]
    assert blocked, "the browser, not the network, refused the call"
    assert not any(r.path.endswith(MODEL) for r in fake.requests), \
        "the preflight failed, so the chat request was never sent"
