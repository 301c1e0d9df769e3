"""Finding and removing sandbox containers: by task (cancel) and by expiry (reaper).

Works from labels and names only, so it also cleans up after a crashed worker or a worker
on another host sharing the engine. Containers are found in every state (created, running,
exited).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import docker.errors

from sandbox import containers as c

log = logging.getLogger(__name__)


def list_managed(api: Any, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """All containers carrying ``taskexec.managed=1`` (and ``labels``, when given)."""
    wanted = [f"{c.LABEL_MANAGED}=1"] + [f"{k}={v}" for k, v in (labels or {}).items()]
    return api.containers(all=True, filters={"label": wanted})


def describe(entry: dict[str, Any]) -> dict[str, Any]:
    """Task id, attempt, worker, deadline and pool state of a listed container."""
    labels = entry.get("Labels") or {}
    names = entry.get("Names") or []
    parsed = next((p for p in (c.parse_name(n) for n in names) if p), None)
    try:
        deadline: float | None = float(labels.get(c.LABEL_DEADLINE) or 0) or None
    except ValueError:
        deadline = None
    info = {
        "id": entry["Id"],
        "taskId": labels.get(c.LABEL_TASK, ""),
        "slug": None,
        "attempt": int(labels.get(c.LABEL_ATTEMPT) or 0),
        "workerId": labels.get(c.LABEL_WORKER, ""),
        "deadline": deadline,
        "idlePool": labels.get(c.LABEL_POOL) == "1" and parsed is None,
    }
    if parsed:  # a pooled container that was given a task: the name is authoritative
        info.update(slug=parsed["slug"], attempt=parsed["attempt"], deadline=parsed["deadline"])
    return info


def remove(api: Any, cid: str) -> bool:
    """Kill and remove a container; False if it was already gone."""
    try:
        api.remove_container(cid, force=True)
        return True
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # removal already in progress
            return False
        raise


def kill_task(api: Any, task_id: str) -> int:
    """Kill and remove every container of ``task_id``; return how many were removed."""
    slug = c.task_slug(task_id)
    count = 0
    for entry in list_managed(api):
        info = describe(entry)
        mine = (info["taskId"] == task_id and task_id) or info["slug"] == slug
        if mine and remove(api, info["id"]):
            count += 1
    return count


def reap(api: Any, live_worker_ids: set[str] | None = None, now: float | None = None,
         grace_s: float = 30.0, labels: dict[str, str] | None = None,
         worker_gone: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """Remove containers past deadline + grace, or whose worker is gone.

    A worker is gone when it is not in ``live_worker_ids`` (when given) or when
    ``worker_gone(worker_id)`` says so (e.g. a local process that no longer exists).
    Containers with an empty worker id are only reaped by deadline. ``labels`` narrows the
    scan (e.g. to one deployment or a test).
    """
    now = time.time() if now is None else now
    reaped = []
    for entry in list_managed(api, labels):
        info = describe(entry)
        reason = None
        if info["deadline"] is not None and now > info["deadline"] + grace_s:
            reason = "deadline"
        elif info["workerId"] and (
                (live_worker_ids is not None and info["workerId"] not in live_worker_ids)
                or (worker_gone is not None and worker_gone(info["workerId"]))):
            reason = "worker_gone"
        if reason is None:
            continue
        try:
            removed = remove(api, info["id"])
        except docker.errors.APIError as exc:
            log.warning("sandbox reaper: cannot remove %s: %s", info["id"][:12], exc)
            continue
        if removed:
            reaped.append({"taskId": info["taskId"] or info["slug"] or "", "attempt": info["attempt"],
                           "workerId": info["workerId"], "reason": reason,
                           "containerId": info["id"], "idlePool": info["idlePool"]})
    return reaped
