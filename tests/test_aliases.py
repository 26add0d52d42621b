"""MODEL_ALIASES (gateway/cloudflare/aliases.py, config.py) and the catalogue's model resolution."""
import logging

import pytest

from config import _aliases
from gateway.cloudflare.aliases import Aliases
from gateway.cloudflare.catalogue import ModelCatalogue
from gateway.errors import InvalidRequestError, NotFoundError

LLAMA = "@cf/meta/llama-3.1-8b-instruct"
BGE = "@cf/baai/bge-base-en-v1.5"
RECORDS = [{"name": LLAMA, "task": {"name": "Text Generation"}},
           {"name": BGE, "task": {"name": "Text Embeddings"}}]


class Upstream:
    def search_models(self, task=None):
        return RECORDS


@pytest.fixture
def warnings():
    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(level=logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("gateway")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_setting_is_parsed_in_order_keeping_malformed_items_to_report():
    assert _aliases(" gpt-4o-mini = @cf/meta/x , broken, =@cf/a/b ") == {
        "gpt-4o-mini": "@cf/meta/x", "broken": "", "=@cf/a/b": "@cf/a/b"}


@pytest.mark.parametrize("aliases, allow_list, problem", [
    pytest.param({"broken": ""}, [], "not of the form", id="no-model"),
    pytest.param({"a b": LLAMA}, [], "not of the form", id="bad-alias-name"),
    pytest.param({"x": "../etc"}, [], "not a model name", id="bad-model-name"),
    pytest.param({"x": BGE}, [LLAMA], "not in MODELS", id="outside-allow-list"),
])
def test_static_problems(aliases, allow_list, problem):
    (found,) = Aliases(aliases, allow_list).static_problems().values()
    assert problem in found


def test_reported_once_per_gateway_across_workers(tmp_path, monkeypatch, warnings):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for _ in range(3):  # three workers of one gunicorn
        Aliases({"gpt-x": "@cf/acme/none"}, [LLAMA]).report_settings()
    assert len([m for m in warnings if "'gpt-x'" in m]) == 1


def test_catalogue_check_reports_missing_model(warnings):
    catalogue = ModelCatalogue(Upstream(), 300, [], aliases={"gpt-x": "@cf/acme/none",
                                                             "ok": LLAMA})
    catalogue.records()
    assert [m for m in warnings if "MODEL_ALIASES" in m] == [
        "MODEL_ALIASES: the alias 'gpt-x' points at '@cf/acme/none', which Cloudflare's catalogue "
        "does not list for the tasks this gateway serves; requests for it get 404."]
    assert [e["id"] for e in catalogue.entries()] == [LLAMA, BGE, "ok"]


def test_resolve_alias_task_and_404():
    catalogue = ModelCatalogue(Upstream(), 300, [], aliases={"gpt-4o-mini": LLAMA,
                                                             "emb": BGE, "gone": "@cf/a/none"})
    resolved = catalogue.resolve("gpt-4o-mini", "Text Generation", "/v1/chat/completions")
    assert (resolved.requested, resolved.name, resolved.confirmed) == ("gpt-4o-mini", LLAMA, True)
    with pytest.raises(InvalidRequestError) as caught:
        catalogue.resolve("emb", "Text Generation", "/v1/chat/completions")
    assert caught.value.param == "model" and "Text Embeddings" in caught.value.message
    with pytest.raises(NotFoundError) as missing:
        catalogue.resolve("gone", "Text Generation", "/v1/chat/completions")
    assert "'gone'" in missing.value.message and "@cf/a/none" not in missing.value.message


def test_chat_with_allow_list_checks_task_only_once_the_catalogue_is_loaded():
    catalogue = ModelCatalogue(Upstream(), 300, [LLAMA, BGE])
    assert catalogue.resolve(BGE, "Text Generation", "/v1/chat/completions",
                             fetch=False).record is None  # cold: Workers AI judges
    catalogue.records()
    with pytest.raises(InvalidRequestError):
        catalogue.resolve(BGE, "Text Generation", "/v1/chat/completions", fetch=False)
