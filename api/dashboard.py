"""The operations dashboard: the page at `/dashboard` and its JSON API `GET /api/v1/stats/overview`.

The page is static (HTML, CSS and vanilla JS drawing its own SVG charts, no CDN); like the inbox it asks
for a token and sends it as `Authorization: Bearer`. The data comes from PostgreSQL (`taskexec.store.stats`)
plus the broker (`taskexec.broker.broker_stats`: queue lengths, workers). Needs `tasks:monitor`.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.io import parse_query
from api.metrics import broker_stats
from api.pages import page_blueprint
from api.routing import operation
from api.runtime import runtime
from taskexec.core.constants import API_PREFIX, Permission, Pool, Status
from taskexec.store import stats

bp = page_blueprint("dashboard", "dashboard", "/dashboard")


class OverviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: str = "1h"
    definition: str | None = Field(None, max_length=128)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if value not in stats.WINDOWS:
            raise ValueError(f"must be one of {', '.join(stats.WINDOWS)}")
        return value


@operation(bp, "GET", f"{API_PREFIX}/stats/overview", summary="Dashboard data: counts, timeline, pools, failures",
           permission=Permission.MONITOR, query=OverviewQuery, response_schema={"type": "object"})
def overview():
    q = parse_query(OverviewQuery)
    rt = runtime()
    with rt.db.session() as s:
        body = stats.overview(s, q.window, q.definition or None)
    body["pools"], body["brokerReachable"] = pools(body)
    return jsonify(body)


def pools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Per pool: its queue, messages waiting, workers online and their capacity, open tasks, load."""
    broker = broker_stats()
    try:
        lengths, reachable = broker.queue_lengths(), True
    except Exception:
        lengths, reachable = {}, False
    workers, inspected = broker.workers() if reachable else ([], False)
    out = []
    for pool, queue in broker.queue_names.items():
        mine = [w for w in workers if queue in w.queues]
        capacity = sum(w.concurrency for w in mine)
        open_now = body["open"].get(pool.upper(), {})
        busy = open_now.get(Status.RUNNING, 0)
        out.append({"pool": pool, "queue": queue, "queued": lengths.get(queue),
                    "pending": open_now.get(Status.PENDING, 0),
                    "assigned": open_now.get(Status.ASSIGNED, 0), "running": busy,
                    "workersOnline": len(mine) if inspected else None, "capacity": capacity if inspected else None,
                    "load": round(busy / capacity, 3) if inspected and capacity and pool != Pool.MANUAL else None,
                    "workers": [{"name": w.name, "concurrency": w.concurrency} for w in mine]})
    return out, reachable
