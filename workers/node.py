"""What this worker process is: its Celery node name, the host part of it, and its pool.

`taskexec worker <pool>` names the node `<pool>@<host>`; the pool is read back from that prefix once
the worker is ready. Metric labels of the worker's own series come from here (`labels()`).
"""

from __future__ import annotations

import socket

from celery.utils.nodenames import nodesplit

POOLS = ("automated", "manual", "integration")

_node = {"worker": socket.gethostname(), "hostname": socket.gethostname(), "pool": "unknown"}


def pool_of(node: str) -> str:
    """The pool of a node name `<pool>@<host>`, or "unknown"."""
    prefix = node.split("@", 1)[0]
    return prefix if "@" in node and prefix in POOLS else "unknown"


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
