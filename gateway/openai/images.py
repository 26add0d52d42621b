"""OpenAI's image generation over Workers AI's Text-to-Image models: dicts in, dicts out.

What a model takes is read from its input schema: `width`/`height` (and their
bounds), `steps` or `num_steps`, `seed`, `negative_prompt`, the prompt's length, and
whether it wants `multipart/form-data` (FLUX.2). What comes back decides how it is
read: raw image bytes (the Stable Diffusion family answers `image/png`) or JSON with
the image in base64 (`flux-1-schnell`). Either way the client gets OpenAI's
`{created, data: [{b64_json}]}`, and anything that is not an image is refused.
"""
import base64
import binascii
import time

from gateway.cloudflare.model_inputs import InputSchema
from gateway.errors import InvalidRequestError

# The form fields FLUX.2's REST example sends (Cloudflare's changelog of 2026-01-28): its
# schema only says "multipart", so this list stands in for the schema (a last resort).
MULTIPART_FIELDS = ("prompt", "width", "height", "steps", "seed")

# Magic numbers of the image formats Workers AI models produce.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"),
              (b"RIFF", "webp"), (b"GIF8", "gif"))


class NotAnImage(ValueError):
    """Workers AI answered 200 with something that is not an image."""


def _unsupported(model, param, what):
    return InvalidRequestError(f"The model '{model}' does not take {what}.", param=param)


def _bounded(inputs, name, value, param):
    low, high = inputs.bounds(name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidRequestError(
            f"'{param}' gives {name} {value}; this model takes {low if low is not None else 1}"
            f" to {high if high is not None else 'any'}.", param=param)
    return value


def upstream_inputs(request, model, schema):
    """The Workers AI input for one image, and whether it goes as a multipart form.

    Raises InvalidRequestError naming the parameter the model cannot take.
    """
    inputs = InputSchema(schema)
    multipart = "multipart" in inputs.props  # only when the schema says so
    takes = (lambda name: name in MULTIPART_FIELDS) if multipart else inputs.has
    limit = inputs.max_length("prompt")
    if limit is not None and len(request["prompt"]) > limit:
        raise InvalidRequestError(f"'prompt' is {len(request['prompt'])} characters long; this "
                                  f"model takes at most {limit}.", param="prompt")
    payload = {"prompt": request["prompt"]}
    size = request.get("size")
    if size and size != "auto":
        if not (takes("width") and takes("height")):
            raise _unsupported(model, "size", "a size (its schema has no width and height)")
        width, height = (int(side) for side in size.split("x"))
        payload["width"] = _bounded(inputs, "width", width, "size")
        payload["height"] = _bounded(inputs, "height", height, "size")
    if "steps" in request:
        name = next((n for n in ("steps", "num_steps") if takes(n)), None)
        if name is None:
            raise _unsupported(model, "steps", "'steps'")
        payload[name] = _bounded(inputs, name, request["steps"], "steps")
    for name in ("seed", "negative_prompt"):
        if name in request:
            if not takes(name):
                raise _unsupported(model, name, f"'{name}'")
            payload[name] = request[name]
    return payload, multipart


def varied(payload, index):
    """The input for image number `index` of `n`: a given seed counts up, so images differ."""
    if index and "seed" in payload:
        return {**payload, "seed": payload["seed"] + index}
    return payload


def form_fields(payload):
    """A multipart form's fields (all text) for `payload`."""
    return {name: str(value) for name, value in payload.items()}


def image_kind(data):
    """The image format of `data` ("png", "jpeg", ...), else None."""
    for signature, kind in SIGNATURES:
        if data.startswith(signature):
            return kind
    return None


def image_bytes(data=None, body=None):
    """The image in a binary answer (`data`) or in a JSON one (`body`, `result.image`)."""
    if data is None:
        result = body.get("result", body) if isinstance(body, dict) else None
        encoded = result.get("image") if isinstance(result, dict) else None
        if not isinstance(encoded, str):
            raise NotAnImage("no image in the answer")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise NotAnImage("the image is not base64") from None
    if image_kind(data) is None:
        raise NotAnImage("the answer is not an image")
    return data


def images_response(images, created=None):
    """OpenAI's `ImagesResponse` with each image as `b64_json`."""
    return {"created": created or int(time.time()),
            "data": [{"b64_json": base64.b64encode(image).decode("ascii")} for image in images]}
