"""The application factory: `create_app(config_class)` builds one gateway app.

gunicorn imports `app.py` in each worker after gevent has patched the process, so
everything created here (the pooled upstream session, the catalogue cache, its lock)
is per worker and gevent-aware.
"""
import logging
import types

from flask import Flask

from config import Config

log = logging.getLogger(__name__)


class GatewayFlask(Flask):
    """Flask, remembering which views and hooks are coroutines.

    Flask asks `inspect.iscoroutinefunction` of the view and of every before/after hook
    on every request (a dozen times per request here, about 1% of a worker's CPU in
    bench/ profiles); for a given function the answer never changes. Only plain
    functions are remembered (views and hooks are a fixed set); anything else is asked
    each time, as by Flask.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_of = {}

    def ensure_sync(self, func):
        sync = self._sync_of.get(func)
        if sync is None:
            sync = super().ensure_sync(func)
            if isinstance(func, types.FunctionType):
                self._sync_of[func] = sync
        return sync


def create_app(config_class=Config):
    """Build the gateway with the settings of `config_class`."""
    from gateway import auth, errors
    from gateway.ops import client_io, cors, proxy, request_id, request_log
    from gateway.ops.metrics import state_store_recovered
    from gateway.cloudflare.catalogue import ModelCatalogue
    from gateway.cloudflare.model_schemas import ModelSchemas
    from gateway.openai.image_fetch import ImageFetcher
    from gateway.jsonio import OrjsonProvider
    from gateway.routes import (admin, audio, chat, completions, embeddings, health, images,
                                metrics, models, playground, responses)
    from gateway.state import responses as stored_responses
    from gateway.state.cli import keys
    from gateway.cloudflare.client import MISSING_CREDENTIALS, UpstreamClient
    from gateway.state import open_store

    app = GatewayFlask(__name__)
    app.config.from_object(config_class)
    app.json = OrjsonProvider(app)
    app.url_map.strict_slashes = False

    # Fails at start-up, naming STATE_URL, when the store can never work (unwritable file).
    app.extensions["state"] = open_store(app.config["STATE_URL"], app.config["STATE_TIMEOUT"])
    state_store_recovered()  # up until a call fails
    upstream = UpstreamClient(app.config, app.extensions["state"])
    if not upstream.configured:
        log.debug(MISSING_CREDENTIALS)  # gunicorn's master warns once (gunicorn.conf.py)
    app.extensions["upstream"] = upstream
    catalogue = ModelCatalogue(upstream, app.config["MODELS_CACHE_TTL"], app.config["MODELS"],
                               aliases=app.config["MODEL_ALIASES"])
    app.extensions["catalogue"] = catalogue
    app.extensions["model_schemas"] = ModelSchemas(upstream, app.config["MODELS_CACHE_TTL"],
                                                   catalogue)
    stored_responses.init_app(app)
    app.extensions["image_fetcher"] = ImageFetcher(app.config["IMAGE_FETCH_MAX_BYTES"],
                                                   app.config["IMAGE_FETCH_TIMEOUT"],
                                                   app.config["IMAGE_FETCH_ALLOW_HOSTS"])
    catalogue.aliases.report_settings()
    if catalogue.aliases and upstream.configured:
        _warm_up(catalogue)  # aliases are checked against it: load it at start-up

    cors.init_app(app)
    request_id.init_app(app)
    request_log.init_app(app)
    audio.init_app(app)  # before anything reads a body: the audio routes' own size limit
    auth.init_app(app)
    errors.register_error_handlers(app)
    client_io.init_app(app)
    proxy.init_app(app)

    app.cli.add_command(keys)
    if app.config["ADMIN_TOKEN"]:
        app.register_blueprint(admin.bp, url_prefix="/admin")
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(playground.bp)
    for resource in (models, chat, completions, responses, embeddings, images, audio):
        app.register_blueprint(resource.bp, url_prefix="/v1")
    return app


def _warm_up(catalogue):
    """Load the catalogue in the background of a gevent worker (not in tests or `flask run`)."""
    from gevent import monkey, spawn

    from gateway.errors import APIError

    def load():
        try:
            catalogue.records()
        except APIError:
            pass  # the first request will try again and answer the error

    if monkey.is_module_patched("socket"):
        spawn(load)
