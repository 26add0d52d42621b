"""POST /v1/images/generations."""
from flask import Blueprint, current_app
from urllib3 import encode_multipart_formdata

from gateway import jsonio
from gateway.cloudflare.catalogue import TEXT_TO_IMAGE
from gateway.errors import UpstreamError
from gateway.openai import images
from gateway.openai.calls import Caller, json_request, start
from schemas import image_request

bp = Blueprint("images", __name__)


@bp.post("/images/generations")
def create_image():
    """`n` images (one upstream call each, UPSTREAM_FANOUT at a time) as `b64_json`."""
    data = json_request(image_request)
    resolved = start(data["model"], TEXT_TO_IMAGE, data["n"], len(data["prompt"]))
    schema = current_app.extensions["model_schemas"].get(resolved.name)
    payload, multipart = images.upstream_inputs(data, data["model"], schema)
    caller = Caller(resolved.name)

    def draw(index):
        inputs = images.varied(payload, index)
        if multipart:
            form, content_type = encode_multipart_formdata(images.form_fields(inputs))
            answer = caller.run(data=form, content_type=content_type, binary=True)
        else:
            answer = caller.run(inputs, binary=True)
        try:
            return images.image_bytes(answer.data, answer.body)
        except images.NotAnImage:
            raise UpstreamError("Workers AI answered with something that is not an image.",
                                code="not_an_image") from None

    pictures = caller.map(draw, range(data["n"]))
    return jsonio.json_response(images.images_response(pictures))
