"""What this worker process is: its Celery node name, the host part of it, and its pool.

`taskexec worker <pool>` names the node `<pool>-<pid>@<host>` (`node_name`); the pool is read back
from that prefix once the worker is ready. Metric labels of the worker's own series come from here.
"""

from __future__ import annotations

import os
import socket

from celery.utils.nodenames import nodesplit

from taskexec.core.constants import POOLS

_node = {"worker": socket.gethostname(), "hostname": socket.gethostname(), "pool": "unknown"}


def node_name(pool: str, pid: int | None = None) -> str:
    """Celery node name of a worker process: `<pool>-<pid>@<host>` (`%h`: Celery fills in the host name).

    The pid makes two workers of one pool on one host distinct nodes (Celery's broadcast replies, Flower,
    `celery inspect` key by node name); the pool stays the prefix, so Flower shows which pool it is."""
    return f"{pool}-{os.getpid() if pid is None else pid}@%h"


def pool_of(node: str) -> str:
    """The pool of a node name made by `node_name` (or the older `<pool>@<host>`); "unknown" otherwise."""
    name, at, _host = node.partition("@")
    prefix = name.split("-", 1)[0]
    return prefix if at and prefix in POOLS else "unknown"


def set_node(node: str) -> None:
    """Record the node name Celery gave this worker (at `worker_ready`)."""
    _node.update(worker=node, hostname=nodesplit(node)[1] or node, pool=pool_of(node))


def name() -> str:
    return _node["worker"]


def hostname() -> str:
    """The host part of the node name: celery-exporter's `hostname` label."""
    return _node["hostname"]


def pool() -> str:
    return _node["pool"]


def labels() -> dict[str, str]:
    """`{hostname, pool}`: the labels of the worker's taskexec_* gauges."""
    return {"hostname": _node["hostname"], "pool": _node["pool"]}
