"""taskexec's kombu Redis channel (`taskexec.broker.broker_redis`) against the real test Redis."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu import Connection, Queue

from taskexec.broker import broker_redis
from tests.support import REDIS_URL


def test_one_client_per_pool_and_a_connection_error_once_the_connection_is_closed() -> None:
    """A channel closed after its connection (Celery does this after a lost broker) must fail with a connection
    error kombu ignores, not the AttributeError that made Celery stop a worker as "unrecoverable"."""
    queue = Queue(f"tel-test-{uuid.uuid4().hex[:8]}")
    conn = Connection(REDIS_URL, transport=broker_redis.TRANSPORT)
    try:
        channel = conn.channel()
        assert isinstance(channel, broker_redis.Channel)
        assert channel._create_client() is channel._create_client()  # noqa: SLF001 - the shared client
        queue(channel).declare()
        with conn.Producer(channel) as producer:
            producer.publish({"n": 1}, routing_key=queue.name, declare=[queue])
        assert queue(channel).get(no_ack=True).payload == {"n": 1}

        channel._disconnect_pools()  # noqa: SLF001 - as Channel.close does, then the transport is detached
        conn._do_close_transport()  # noqa: SLF001
        with pytest.raises(redis.exceptions.ConnectionError):
            channel._create_client()  # noqa: SLF001
        conn.maybe_close_channel(channel)  # what Celery's close of a lost connection runs: no exception
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(queue.name)
        client.close()
        conn.release()
