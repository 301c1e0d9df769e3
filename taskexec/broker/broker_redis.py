"""kombu's Redis transport, without a new client object for every command.

kombu's Redis channel builds a fresh ``redis.Redis`` for each publish, acknowledgement and event
(``Channel._create_client``), and redis-py's constructor copies its table of about 160 response
callbacks into a case-insensitive dict every time: on the benchmark machine that cost more CPU than
the LPUSH it was built for, several times per task in the router and in every pool (bench/README.md).
This channel keeps one client per connection pool; a redis-py client is thread-safe and each command
still takes a connection from the pool, exactly as before. Selected by `make_celery` for ``redis://``
and ``rediss://`` brokers (``broker_transport``); the message format and the keys are kombu's own.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _client_lock = threading.Lock()
    _shared: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's own connection (BRPOP, pub/sub): unchanged
            return super()._create_client(asynchronous=True)
        if self._pool is None and getattr(self.connection, "client", None) is None:
            # The kombu connection was closed already (its transport detached), and closing it again after a
            # lost broker closes this channel, which restores unacked messages through a new pool built from
            # the connection's URL: kombu fails with an AttributeError there, which Celery reports as an
            # "unrecoverable error" and stops the worker (seen with Redis killed mid-load). A connection
            # error is what kombu's closing code expects and ignores; the messages stay in the broker's
            # unacked set and are restored by the next consumer once the visibility timeout has passed.
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        pool = self.pool
        client = self._shared
        if client is None or client.connection_pool is not pool:
            with self._client_lock:
                client = self._shared
                if client is None or client.connection_pool is not pool:
                    client = self._shared = self.Client(connection_pool=pool)
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
