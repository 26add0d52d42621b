"""The shared state store on Redis: exact across every worker of every host.

Counters change only on the server: `admit` is one Lua script (it checks the key still
exists, drops what left the window, decides exactly as `store.decide` does and books the
request, in one round trip), `settle` is one MULTI/EXEC transaction. Nothing is read into
Python, changed and written back. Failures are not retried here: a store that does not
answer within STATE_TIMEOUT is skipped for a second and the gateway degrades.

Layout (every name starts with `cfgw:`): `key:<sha256>` a key's record (JSON) and
`keys` name -> sha256; `used` name -> last use; `win:<sha256>` the window's one-second
buckets (`r<second>` requests, `t<second>` tokens); `open:<sha256>` open requests
(sorted set, scored by when their slot lapses); `day:<sha256>:<date>` tokens that UTC
day; `usage:<date>` `<name>\\t<model>\\t{requests,prompt,completion}` counters;
`accounts` account id -> "until reason"; `doc:<id>` JSON documents.
"""
from datetime import UTC, date, datetime, timedelta

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.state.store import USAGE_DAYS, WINDOW, StateConfigError, Store, Window, guarded

PREFIX = "cfgw:"
DAY = 86400

# KEYS: record, window, open requests, daily tokens.
# ARGV: now, second, estimate, rpm, tpm, max_parallel, daily_tokens (-1: unlimited), ticket, hold
ADMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'revoked'} end
local now, second, estimate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm, parallel, daily_cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
    tonumber(ARGV[7])
local fields = redis.call('HGETALL', KEYS[2])
local kept, stale, requests, tokens = {}, {}, 0, 0
for i = 1, #fields, 2 do
  local name, value = fields[i], tonumber(fields[i + 1])
  if tonumber(string.sub(name, 2)) <= second - WINDOW then
    stale[#stale + 1] = name
  else
    if string.sub(name, 1, 1) == 'r' then requests = requests + value
    else tokens = tokens + value end
    kept[#kept + 1] = name
    kept[#kept + 1] = fields[i + 1]
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local open = redis.call('ZCARD', KEYS[3])
local daily = tonumber(redis.call('GET', KEYS[4]) or '0')
local refused = ''
if daily_cap >= 0 and daily >= daily_cap then refused = 'quota'
elseif parallel >= 0 and open >= parallel then refused = 'parallel'
elseif rpm >= 0 and requests >= rpm then refused = 'requests'
elseif tpm >= 0 and tokens + math.min(estimate, tpm) > tpm then refused = 'tokens' end
if refused == '' then
  redis.call('HINCRBY', KEYS[2], 'r' .. second, 1)
  redis.call('HINCRBY', KEYS[2], 't' .. second, estimate)
  redis.call('EXPIRE', KEYS[2], WINDOW * 2)
  if parallel >= 0 then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[9]), ARGV[8])
    redis.call('EXPIRE', KEYS[3], math.ceil(tonumber(ARGV[9])) + WINDOW)
  end
end
return {refused, open, daily, kept}
""".replace("WINDOW", str(WINDOW))

# KEYS: keys index, record. ARGV: name, sha256, record JSON.
ADD_KEY = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""

# KEYS: keys index, last-used hash. ARGV: name, key prefix. Returns {record, last used} or {}.
REMOVE_KEY = """
local hash = redis.call('HGET', KEYS[1], ARGV[1])
if not hash then return {} end
local record = redis.call('GET', ARGV[2] .. hash)
redis.call('DEL', ARGV[2] .. hash)
redis.call('HDEL', KEYS[1], ARGV[1])
local used = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return {record or '{}', used or ''}
"""


def _limit(value):
    return -1 if value is None else value


class RedisStore(Store):
    """The store on one Redis server (or a Redis-compatible service); see the module docstring."""

    failures = (redis.RedisError, OSError)

    def __init__(self, url, timeout=0.5):
        super().__init__()
        try:
            self.redis = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), health_check_interval=30)
        except ValueError as exc:
            raise StateConfigError(f"STATE_URL is not a usable Redis URL: {exc}") from None
        self._admit = self.redis.register_script(ADMIT)
        self._add_key = self.redis.register_script(ADD_KEY)
        self._remove_key = self.redis.register_script(REMOVE_KEY)

    @guarded
    def ping(self):
        self.redis.ping()

    # -- documents ---------------------------------------------------------------------------

    @guarded
    def put_json(self, key, value, ttl=None):
        milliseconds = None if ttl is None else max(1, int(ttl * 1000))
        self.redis.set(PREFIX + "doc:" + key, orjson.dumps(value), px=milliseconds)

    @guarded
    def get_json(self, key):
        value = self.redis.get(PREFIX + "doc:" + key)
        return None if value is None else orjson.loads(value)

    @guarded
    def delete(self, key):
        return self.redis.delete(PREFIX + "doc:" + key) > 0

    # -- keys --------------------------------------------------------------------------------

    @guarded
    def add_key(self, record):
        keys = [PREFIX + "keys", PREFIX + "key:" + record["hash"]]
        return self._add_key(keys, [record["name"], record["hash"], orjson.dumps(record)]) == 1

    @guarded
    def find_key(self, key_hash):
        value = self.redis.get(PREFIX + "key:" + key_hash)
        return None if value is None else orjson.loads(value)

    @guarded
    def list_keys(self):
        hashes = self.redis.hgetall(PREFIX + "keys")
        if not hashes:
            return []
        names = sorted(hashes)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([PREFIX + "key:" + hashes[n].decode() for n in names])
            pipe.hgetall(PREFIX + "used")
            records, used = pipe.execute()
        return [{**orjson.loads(record), "last_used_at": _whole(used.get(name))}
                for name, record in zip(names, records, strict=True) if record is not None]

    @guarded
    def remove_key(self, name):
        found = self._remove_key([PREFIX + "keys", PREFIX + "used"], [name, PREFIX + "key:"])
        if not found:
            return None
        return {**orjson.loads(found[0]), "last_used_at": _whole(found[1] or None)}

    # -- limits ------------------------------------------------------------------------------

    @guarded
    def admit(self, ticket):
        key, limits = ticket.key_hash, ticket.limits
        reply = self._admit(
            [PREFIX + "key:" + key, PREFIX + "win:" + key, PREFIX + "open:" + key,
             f"{PREFIX}day:{key}:{ticket.date}"],
            [repr(ticket.now), ticket.second, ticket.estimate, _limit(limits.rpm),
             _limit(limits.tpm), _limit(limits.max_parallel), _limit(limits.daily_tokens),
             ticket.id, repr(ticket.hold)])
        refused = reply[0].decode() or None
        if refused == "revoked":
            return Window("revoked")
        buckets = {}
        fields = reply[3]
        for name, value in zip(fields[::2], fields[1::2], strict=True):
            name = name.decode()
            bucket = buckets.setdefault(int(name[1:]), [0, 0])
            bucket[name[0] == "t"] = int(value)
        rows = [(second, r, t) for second, (r, t) in sorted(buckets.items())]
        return Window(refused, rows, int(reply[1]), int(reply[2]))

    @guarded
    def settle(self, ticket, prompt_tokens, completion_tokens, model):
        key, total = ticket.key_hash, prompt_tokens + completion_tokens
        usage_key, field = f"{PREFIX}usage:{ticket.date}", f"{ticket.name}\t{model}\t"
        with self.redis.pipeline(transaction=True) as pipe:
            if total != ticket.estimate:
                pipe.hincrby(PREFIX + "win:" + key, f"t{ticket.second}", total - ticket.estimate)
            pipe.zrem(PREFIX + "open:" + key, ticket.id)
            day = f"{PREFIX}day:{key}:{ticket.date}"
            pipe.incrby(day, total)
            pipe.expire(day, 2 * DAY)
            pipe.hincrby(usage_key, field + "requests", 1)
            pipe.hincrby(usage_key, field + "prompt", prompt_tokens)
            pipe.hincrby(usage_key, field + "completion", completion_tokens)
            pipe.expire(usage_key, USAGE_DAYS * DAY)
            pipe.hset(PREFIX + "used", ticket.name, int(ticket.now))
            pipe.execute()

    @guarded
    def usage(self, since, name=None):
        dates = _dates_since(since)
        with self.redis.pipeline(transaction=False) as pipe:
            for date in dates:
                pipe.hgetall(f"{PREFIX}usage:{date}")
            tables = pipe.execute()
        rows = {}
        for date, table in zip(dates, tables, strict=True):
            for field, value in table.items():
                key_name, model, counter = field.decode().split("\t")
                if name is not None and key_name != name:
                    continue
                row = rows.setdefault((date, key_name, model), {
                    "name": key_name, "date": date, "model": model, "requests": 0,
                    "prompt_tokens": 0, "completion_tokens": 0})
                row[counter if counter == "requests" else f"{counter}_tokens"] = int(value)
        return [rows[k] for k in sorted(rows)]

    # -- accounts ----------------------------------------------------------------------------

    @guarded
    def mark_account(self, account_id, until, reason):
        self.redis.hset(PREFIX + "accounts", account_id, f"{until!r} {reason}")

    @guarded
    def accounts_out(self, now):
        out = {}
        for account, value in self.redis.hgetall(PREFIX + "accounts").items():
            until, _, reason = value.decode().partition(" ")
            if float(until) > now:
                out[account.decode()] = (float(until), reason)
        return out

    def close(self):
        self.redis.close()


def _dates_since(since):
    """Every UTC date from `since` to today, at most USAGE_DAYS of them."""
    today = datetime.now(UTC).date()
    first = max(date.fromisoformat(since), today - timedelta(days=USAGE_DAYS))
    return [(first + timedelta(days=n)).isoformat() for n in range((today - first).days + 1)]


def _whole(value):
    return None if value is None else int(float(value))
