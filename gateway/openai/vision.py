"""Images in chat messages (`image_url` content parts), in the form the model takes.

Vision models on Workers AI take images as data, in one of two forms their schema
shows: OpenAI-style `image_url` parts holding a data URL, or a single top-level
`image` beside string messages (llama-3.2-11b-vision). `http(s)` URLs are fetched by
the gateway first (gateway/openai/image_fetch.py) when the operator allows it.
"""
import base64
import binascii
import re

from gateway.errors import InvalidRequestError
from gateway.openai.image_fetch import ImageFetchError

DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+(;[^,]*)?,", re.ASCII)


def image_parts(messages):
    """(param path, URL) of every image part, in order."""
    return [(f"messages[{i}].content[{j}]", part["image_url"]["url"])
            for i, message in enumerate(messages) if isinstance(message["content"], list)
            for j, part in enumerate(message["content"]) if part["type"] == "image_url"]


def refuse(param, message, code="invalid_image_url"):
    return InvalidRequestError(message, param=param, code=code)


def inline_images(messages, fetch, fetch_enabled):
    """The messages with every image as a data URL: `http(s)` ones fetched by `fetch(url)`
    (which raises ImageFetchError), anything else refused with a 400 naming the part."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message["content"], list):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(message["content"]):
            if part["type"] == "image_url":
                param, url = f"messages[{i}].content[{j}]", part["image_url"]["url"]
                if DATA_URL.match(url):
                    _check_base64(param, url)
                else:
                    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
                    if scheme not in ("http", "https"):
                        raise refuse(param, "Images must be data:image/... URLs or http(s) "
                                            "URLs.")
                    if not fetch_enabled:
                        raise refuse(param, "This gateway does not fetch image URLs "
                                            "(IMAGE_FETCH is off); send the image as a "
                                            "data:image/...;base64 URL.")
                    try:
                        url = fetch(url)
                    except ImageFetchError as exc:
                        raise refuse(param, f"The image at {param} was not fetched: {exc}") \
                            from None
                part = {"type": "image_url", "image_url": {"url": url}}
            parts.append(part)
        out.append({**message, "content": parts})
    return out


def _check_base64(param, data_url):
    """A data URL must carry base64 image bytes (as OpenAI requires): anything else would
    reach the model as garbage, or fail decoding for models that take the bytes."""
    header, _, data = data_url.partition(",")
    try:
        valid = header.lower().endswith(";base64") and bool(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise refuse(param, f"The image at {param} is not a valid data URL: send "
                            "data:image/<type>;base64,<base64 bytes>.")


def text_of(content):
    """A content's text: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part["type"] == "text")


def upstream_images(messages, capabilities):
    """(messages as the model takes them, extra payload keys) for messages with images.

    Part-taking models get the parts; a model with a top-level `image` gets the one image
    there and string contents (a second image is refused, naming its part).
    """
    if capabilities.vision == "parts":
        return messages, {}
    images = image_parts(messages)
    if len(images) > 1:
        raise refuse(images[1][0], "This model takes one image per request; "
                                   f"{images[1][0]} is a second one.", code="model_not_supported")
    flattened = [{**m, "content": text_of(m["content"])} if isinstance(m["content"], list)
                 else m for m in messages]
    return flattened, {"image": _image_value(images[0][1], capabilities)}


def _image_value(data_url, capabilities):
    """The data URL itself where the schema takes a string, else its bytes as integers."""
    if capabilities.image_string:
        return data_url
    return list(base64.b64decode(data_url.split(",", 1)[1]))
