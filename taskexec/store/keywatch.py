"""Revocations of API keys reach every router process at once, so verified keys can be cached.

A request with an API key costs a database round trip to check it. With TEL_API_KEY_CACHE_SECONDS > 0 a
router process remembers the keys it verified; what makes that safe is this watcher: a trigger
(migration 0007) NOTIFYs the channel `taskexec_api_keys` whenever a row of `api_keys` is updated or deleted
(a revocation by `taskexec apikey revoke`, by another router process, or by plain SQL), and each router
process LISTENs on its own connection and forgets every cached key on each notification. While the
listening connection is down (starting, or the database restarting) nothing is cached: every request
checks its key as without a cache, and the cache is emptied again once the connection is back.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from taskexec.store.auth import ApiKeyCache

log = logging.getLogger(__name__)
CHANNEL = "taskexec_api_keys"  # the channel migration 0007's trigger notifies
RECONNECT_S = 1.0
POLL_S = 5.0  # how often the listening thread checks that it should go on


class KeyWatch(threading.Thread):
    """A router process's listener; `listening` tells whether its cache of verified keys may be used."""

    def __init__(self, database_url: str) -> None:
        super().__init__(name="taskexec-keywatch", daemon=True)
        self.url = database_url.replace("postgresql+psycopg://", "postgresql://")
        self.listening = threading.Event()
        self.cache = ApiKeyCache()  # the verified keys of this app, emptied whenever api_keys changes
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.cache.clear()  # changes may have happened while nobody listened
                    self.listening.set()
                    while not self.stop_event.is_set():
                        for _ in conn.notifies(timeout=POLL_S, stop_after=1):
                            self.cache.clear()
            except psycopg.errors.InvalidCatalogName:
                return  # the database is gone (dropped): nothing left to watch
            except Exception as exc:  # noqa: BLE001 - lost connection: no cache until listening again
                if self.listening.is_set():
                    log.warning("api key watch lost its connection; not caching keys", extra={"error": str(exc)})
            finally:
                self.listening.clear()
                self.cache.clear()
            self.stop_event.wait(RECONNECT_S)

    def stop(self) -> None:
        self.stop_event.set()
