"""`flask --app app keys ...`: create, list, revoke client keys and read their usage.

The same fields and checks as the admin API (schemas.KeyRequest), on the store STATE_URL
names. `create` prints the new key once, on a line of its own; nothing else ever prints
a secret.
"""
import time

import click
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError

from gateway.state.keys import NameTaken, create_key, parse_duration, public
from gateway.state.store import USAGE_DAYS, StoreUnavailable, since
from schemas import key_request

keys = AppGroup("keys", help="Client keys kept in the state store (STATE_URL).")
OPTION = {"expires_in": "--expires"}  # a field whose option is not named after it


def _store():
    return current_app.extensions["state"]


def _when(seconds):
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _or_dash(value):
    return "-" if value is None else str(value)


def _table(header, rows):
    """Rows as aligned columns."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _reachable(action):
    """Run `action`; a store that does not answer becomes a clear CLI error."""
    try:
        return action()
    except StoreUnavailable as exc:
        raise click.ClickException(f"The state store (STATE_URL) does not answer: {exc}") from None


@keys.command("create")
@click.option("--name", required=True, help="Unique name: logs, metrics and usage show it.")
@click.option("--models", multiple=True, metavar="PATTERN",
              help="Allowed models, e.g. '@cf/meta/*' (repeat or comma-separate); default all.")
@click.option("--rpm", type=int, help="Requests per minute.")
@click.option("--tpm", type=int, help="Tokens per minute.")
@click.option("--max-parallel", type=int, help="Requests open at once.")
@click.option("--daily-tokens", type=int, help="Tokens per UTC day.")
@click.option("--expires", metavar="DURATION", help="Lifetime: 30d, 12h, 15m or seconds.")
def create(name, models, rpm, tpm, max_parallel, daily_tokens, expires):
    """Make a key and print it, once."""
    fields = {"name": name, "models": [m.strip() for item in models for m in item.split(",")
                                       if m.strip()],
              "rpm": rpm, "tpm": tpm, "max_parallel": max_parallel,
              "daily_tokens": daily_tokens}
    try:
        fields["expires_in"] = parse_duration(expires) if expires else None
        fields = key_request.load(fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None
    except ValidationError as exc:
        problems = "; ".join(f"{OPTION.get(k, '--' + k.replace('_', '-'))}: "
                             f"{' '.join(map(str, v))}" for k, v in exc.messages.items())
        raise click.UsageError(problems) from None
    try:
        secret, record = _reachable(lambda: create_key(_store(), fields))
    except NameTaken:
        raise click.ClickException(f"A key named '{name}' already exists.") from None
    shown = public(record)
    click.echo(f"Created key '{name}': models {', '.join(shown['models']) or 'all'}; "
               f"rpm {_or_dash(rpm)}, tpm {_or_dash(tpm)}, max_parallel {_or_dash(max_parallel)}, "
               f"daily_tokens {_or_dash(daily_tokens)}; expires {_when(shown['expires_at'])}.")
    click.echo("Copy the key now: it is not stored and cannot be shown again.")
    click.echo(secret)


@keys.command("list")
def list_keys():
    """Every key, without secrets."""
    records = _reachable(lambda: _store().list_keys())
    rows = [(r["name"], ",".join(r.get("models") or []) or "all", _or_dash(r.get("rpm")),
             _or_dash(r.get("tpm")), _or_dash(r.get("max_parallel")),
             _or_dash(r.get("daily_tokens")), _when(r.get("created_at")),
             _when(r.get("expires_at")), _when(r.get("last_used_at"))) for r in records]
    _table(("NAME", "MODELS", "RPM", "TPM", "PARALLEL", "DAILY_TOKENS", "CREATED", "EXPIRES",
            "LAST_USED"), rows)


@keys.command("revoke")
@click.argument("name")
def revoke(name):
    """Revoke the key called NAME (every worker refuses it at once)."""
    if _reachable(lambda: _store().remove_key(name)) is None:
        raise click.ClickException(f"No key named '{name}'.")
    click.echo(f"Revoked key '{name}'.")


@keys.command("usage")
@click.argument("name", required=False)
@click.option("--days", type=click.IntRange(1, USAGE_DAYS), default=7, show_default=True,
              help="Days back, today included.")
def usage(name, days):
    """Requests and tokens per UTC day and model, for one key or all."""
    rows = _reachable(lambda: _store().usage(since(days), name))
    _table(("DATE", "NAME", "MODEL", "REQUESTS", "PROMPT_TOKENS", "COMPLETION_TOKENS"),
           [(r["date"], r["name"], r["model"] or "-", r["requests"], r["prompt_tokens"],
             r["completion_tokens"]) for r in rows])
