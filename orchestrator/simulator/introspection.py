"""`/_simulator/...`: what the simulated fleet saw, for tests and benchmarks (read-only, but for a manual
clock's `advance`). Deployment names are DNS labels, so none can be `_simulator`.

`stats`, `fleet` (each deployment as planned, with the facts of its seeded history), `requests`, `creates`,
`jobs`, `backups` (the backups created through the API that exist now; `history=true` adds the seeded
scheduled ones), each filtered by `deployment=NAME` and paged by `offset` and `limit`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from orchestrator.clock import ManualClock
from orchestrator.simulator.fleet import SimulatedFleet
from orchestrator.simulator.records import CreateRecord, RequestRecord


async def introspect(fleet: SimulatedFleet, request: web.Request, segments: tuple[str, ...]) -> web.Response:
    what = segments[0] if segments else ""
    wanted = request.query.get("deployment")
    if what == "clock" and segments[1:] == ("advance",) and request.method == "POST":
        if not isinstance(fleet.clock, ManualClock):
            return web.json_response({"error": "the simulator runs on the real clock"}, status=409)
        fleet.clock.advance(float(request.query.get("seconds", "0")))
        return web.json_response({"now_ms": int(fleet.clock.now() * 1000)})
    if request.method != "GET":
        return web.json_response({"error": "introspection is read-only (GET)"}, status=405)
    offset = int(request.query.get("offset", "0"))
    limit = int(request.query.get("limit", "100000"))
    rows: list[dict[str, Any]]
    if what == "stats":
        return web.json_response(fleet.stats())
    records: list[RequestRecord] | list[CreateRecord] | None = None
    if what == "fleet":
        rows = fleet.describe()
    elif what == "requests":
        records = [r for r in fleet.requests if wanted is None or r.deployment == wanted]
    elif what == "creates":
        records = [c for c in fleet.creates if wanted is None or c.deployment == wanted]
    elif what == "jobs":
        rows = fleet.jobs(wanted)
    elif what == "backups":
        rows = fleet.backups(wanted, history=request.query.get("history", "false").lower() in ("1", "true", "yes"))
    else:
        return web.json_response({"error": "unknown; try stats, fleet, requests, creates, jobs, backups"}, status=404)
    if records is not None:  # page first, convert after: a page costs its size, not the whole log's
        total, items = len(records), [r.to_json() for r in records[offset : offset + limit]]
    else:
        total, items = len(rows), rows[offset : offset + limit]
    return web.json_response({"total": total, "offset": offset, "items": items})
