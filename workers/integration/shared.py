"""The Redis that holds state shared by every integration worker (circuit breakers, rate-limit buckets).

`TEL_REDIS_URL`, else the broker URL when it is Redis. Without one (an AMQP broker and no
`TEL_REDIS_URL`) an integration pool refuses to start (`require_shared_state`), unless
`TEL_INTEGRATION_LOCAL_STATE=true` tells it to keep that state per process (`local_state`). Keys live
under `TEL_INTEGRATION_KEY_PREFIX` and expire on their own.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from redis.commands.core import Script

from taskexec.core.config import ConfigError, Settings

log = logging.getLogger(__name__)
_clients: dict[str, redis.Redis | None] = {}
_scripts: dict[tuple[int, str], Script] = {}
_lock = threading.Lock()


def require_shared_state(settings: Settings) -> None:
    """Start-up check of an integration pool: fail closed without shared state, unless told otherwise."""
    if settings.state_redis_url is None and not settings.integration_local_state:
        raise ConfigError(
            "invalid configuration:\n  TEL_REDIS_URL: an integration pool needs a Redis for the circuit breakers "
            "and rate limits it shares with the other integration workers (the broker is not Redis). Set "
            "TEL_REDIS_URL=redis://..., or TEL_INTEGRATION_LOCAL_STATE=true to keep that state in each process "
            "(every process then admits a host's whole rate limit on its own)")


def redis_client(settings: Settings) -> redis.Redis | None:
    """The shared Redis, or None: state per process (`local_state`; the pool checked it may at start-up)."""
    url = settings.state_redis_url
    key = url or ""
    with _lock:
        if key not in _clients:
            if url is None:
                log.warning("no Redis for integration state: circuit breakers and rate limits are kept per process "
                            "(TEL_INTEGRATION_LOCAL_STATE)")
                _clients[key] = None
            else:
                _clients[key] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                                     health_check_interval=30)
        return _clients[key]


def state_key(settings: Settings, kind: str, host: str) -> str:
    return f"{settings.integration_key_prefix}:{kind}:{host}"


def run_script(client: redis.Redis, source: str, keys: list[str], *args: Any) -> Any:
    """Run a Lua script on `keys` (EVALSHA, loading it on first use)."""
    with _lock:
        script = _scripts.get((id(client), source))
        if script is None:
            script = _scripts[(id(client), source)] = client.register_script(source)
    return script(keys=keys, args=[str(a) for a in args])
