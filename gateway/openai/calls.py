"""What the embeddings, images and audio routes share with chat: one way to call Workers AI.

Each route validates its whole request first, then resolves the model (aliases, the
allow-list, the task) and calls `/ai/run` through the same pooled client, account pool,
retries and time limit as chat, so nothing reaches Cloudflare before the request has
been checked and every upstream failure is mapped the same way. Work that needs several
upstream calls (embedding batches, `n` images) runs them concurrently, a bounded
number at a time, and keeps their order.
"""
import time

from flask import current_app
from gevent.pool import Pool

from gateway.openai.generation import parse_body, resolve_model, time_limit, validate
from gateway.ops.request_log import current_stats


def json_request(schema):
    """The JSON body loaded with `schema` (400 naming the first bad field)."""
    return validate(schema, parse_body())


def start(requested, task, inputs, input_bytes):
    """Note the request's model and input figures for the log line; the model to call."""
    stats = current_stats()
    stats.model, stats.stream = requested, False
    stats.inputs, stats.input_bytes = inputs, input_bytes
    return resolve_model(requested, task)


class Caller:
    """Calls one model for one request, within the request's total time limit."""

    def __init__(self, model):
        self.model = model
        self.upstream = current_app.extensions["upstream"]
        self.total = current_app.config["UPSTREAM_TOTAL_TIMEOUT"]
        self.fanout = max(1, current_app.config["UPSTREAM_FANOUT"])
        self.deadline = time.monotonic() + self.total
        self.stats = current_stats()

    def run(self, payload=None, **options):
        """One upstream call (retried and failed over like chat); its `Answer`."""
        with time_limit(max(self.deadline - time.monotonic(), 0.001)):
            answer = self.upstream.run(self.model, payload, deadline=self.deadline, **options)
        self.stats.account, self.stats.upstream_status = answer.account.position, 200
        return answer

    def open(self, payload=None, **options):
        """One upstream call whose binary answer is left open, to be relayed as it arrives."""
        answer = self.upstream.run(self.model, payload, stream=True, binary=True, **options)
        self.stats.account, self.stats.upstream_status = answer.account.position, 200
        return answer

    def map(self, function, items):
        """`[function(item) for item in items]`, at most UPSTREAM_FANOUT at a time, in order."""
        items = list(items)
        if len(items) == 1:
            return [function(items[0])]
        pool = Pool(min(self.fanout, len(items)))
        try:
            with time_limit(max(self.deadline - time.monotonic(), 0.001)):
                return list(pool.imap(function, items))
        finally:
            pool.kill()
