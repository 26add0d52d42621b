"""Images in chat messages (gateway/openai/vision.py): data URLs checked before anything
goes upstream, in the form the model takes."""
import base64

import pytest

from gateway.cloudflare.capabilities import Capabilities
from gateway.errors import InvalidRequestError
from gateway.openai import vision

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


def message(url):
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def never_fetch(url):
    raise AssertionError("a data URL is never fetched")


@pytest.mark.parametrize("url", [
    pytest.param("data:image/png;base64,!!!x", id="not-base64"),
    pytest.param("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAA=", id="bad-padding"),
    pytest.param("data:image/png,%89PNG%0D%0A", id="not-base64-encoded"),
    pytest.param("data:image/png;base64,", id="empty"),
])
def test_malformed_data_urls_are_refused_naming_the_part(url):
    with pytest.raises(InvalidRequestError) as refused:
        vision.inline_images(message(url), never_fetch, fetch_enabled=False)
    assert refused.value.param == "messages[0].content[1]"
    assert refused.value.code == "invalid_image_url"


@pytest.mark.parametrize("url", [
    pytest.param(f"data:image/png;base64,{PNG}", id="png"),
    pytest.param(f"data:image/jpeg;name=cat.jpg;base64,{PNG}", id="with-parameters"),
])
def test_valid_data_urls_pass_unchanged(url):
    assert vision.inline_images(message(url), never_fetch, fetch_enabled=False) == message(url)


def test_top_level_image_as_bytes_where_the_schema_takes_no_string():
    caps = Capabilities(vision="image", image_string=False)
    messages, extra = vision.upstream_images(message(f"data:image/png;base64,{PNG}"), caps)
    assert extra == {"image": list(base64.b64decode(PNG))}
    assert messages == [{"role": "user", "content": "What is this?"}]
