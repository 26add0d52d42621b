"""The pool of Cloudflare accounts: round robin over the healthy ones, failover on errors.

A free Workers AI account has 10,000 neurons a day, so a shared gateway spreads its
requests over several accounts. An account that reports its daily allocation used up
(3036) sits out until the next 00:00 UTC; one whose token Cloudflare refuses sits out
for a cool-down and is logged as an operator error (by account id, never the token).
What one worker learns goes to the shared state store (gateway.state), and every worker
of every host reads it before picking an account, so once any of them met a spent or
refused account no other calls it until it is due. While the store is down each worker
goes on with what it learnt itself.
"""
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC

from gateway.errors import QuotaExceededError, ServiceUnavailableError
from gateway.state.store import StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class Account:
    """One Cloudflare account and why (and until when) it is out of the rotation."""

    position: int
    account_id: str
    token: str
    out_until: float = 0.0  # wall-clock seconds
    out_reason: str = ""


def next_utc_midnight(now):
    """Unix time of the next 00:00 UTC, when Workers AI allocations reset."""
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    return midnight.timestamp()


class AccountPool:
    """Hands out accounts in round-robin order, skipping those that are out."""

    def __init__(self, credentials, cooldown=300.0, clock=time.time, store=None):
        self.accounts = [Account(i, account_id, token)
                         for i, (account_id, token) in enumerate(credentials)]
        self.cooldown = cooldown
        self.clock = clock
        self.store = store
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.accounts)

    @property
    def secrets(self):
        """Every account id and token, for scrubbing Cloudflare's texts."""
        return [part for a in self.accounts for part in (a.account_id, a.token)]

    def acquire(self, exclude=()):
        """The next healthy account not in `exclude`; a 429 or 503 APIError when there is none."""
        now = self.clock()
        self._learn(now)
        usable = [a for a in self.accounts if a.out_until <= now and a.position not in exclude]
        if not usable:
            raise self._none_left(now)
        with self._lock:
            turn = next(self._turn)
        return usable[turn % len(usable)]

    def _learn(self, now):
        """Take in what other workers and hosts found out about the accounts."""
        if self.store is None:
            return
        try:
            out = self.store.accounts_out(now)
        except StoreUnavailable:
            return
        for account in self.accounts:
            until, reason = out.get(account.account_id, (0.0, ""))
            if until > account.out_until:
                account.out_until, account.out_reason = until, reason

    def _tell(self, account):
        """Share that `account` is out with every worker and host."""
        if self.store is None:
            return
        try:
            self.store.mark_account(account.account_id, account.out_until, account.out_reason)
        except StoreUnavailable:
            pass  # this worker still knows; the others find out with one failed call

    def _none_left(self, now):
        if all(a.out_reason == "quota" for a in self.accounts):
            reset = min(a.out_until for a in self.accounts)
            hours, rest = divmod(int(reset - now), 3600)
            return QuotaExceededError(
                "The Workers AI daily free allocation of every Cloudflare account of this gateway "
                f"is used up; it resets at 00:00 UTC (in {hours} h {rest // 60} min).")
        wait = max(1, int(min(a.out_until for a in self.accounts) - now + 0.999))
        return ServiceUnavailableError(
            "Every Cloudflare account of this gateway is cooling down after errors; "
            f"retry in {wait} s.", headers={"Retry-After": str(wait)})

    def quota_used_up(self, account):
        """3036: out until the allocation resets at the next 00:00 UTC."""
        account.out_until = next_utc_midnight(self.clock())
        account.out_reason = "quota"
        self._tell(account)
        log.warning("Cloudflare account #%d (%s) used up its daily allocation; skipped until "
                    "00:00 UTC", account.position, account.account_id)

    def token_refused(self, account):
        """10000 / 401 / 403: out for the cool-down; the operator must fix the token."""
        account.out_until = self.clock() + self.cooldown
        account.out_reason = "token"
        self._tell(account)
        log.error("Cloudflare refused the API token of account #%d (%s); skipped for %d s. "
                  "Check its token and Workers AI permission.", account.position,
                  account.account_id, self.cooldown)
