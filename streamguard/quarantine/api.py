"""The review API and page (Starlette): reviewers read the queue and decide; admins also
change review settings. Every ``/api`` call needs ``Authorization: Bearer <token>``.

Routes::

    GET  /                                 the review page (no build step, plain JS)
    GET  /api/me                           who the token belongs to
    GET  /api/queue?status&detector&item_id&campaign_id&min_score&sort&order&page&page_size
    GET  /api/events/{event_id}
    GET  /api/campaigns?status             campaigns with held events
    GET  /api/campaigns/{campaign_id}      its accounts, items, time window
    POST /api/events/{event_id}/decision   {"decision": "approve"|"reject", "note": "..."}
    POST /api/campaigns/{campaign_id}/decision   same body, for every pending event in it
    GET  /api/audit?limit&before_id        the append-only decision log
    GET  /api/settings | PUT /api/settings/{key} {"value": "..."} (admin)
    GET  /metrics, /healthz                no token: aggregate numbers only
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from streamguard.quarantine.store import SORTS, STATUS, Principal, QuarantineStore, QueueFilter

ID = Field(min_length=1, max_length=256)
Handler = Callable[[Request, Principal], Awaitable[Response]]


class BadRequest(Exception):
    """The request cannot be read at all (as opposed to a field that fails validation)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueQuery(_Strict):
    status: Literal["pending", "approved", "rejected"] = "pending"
    detector: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    item_id: str | None = Field(None, max_length=256)
    campaign_id: str | None = Field(None, max_length=256)
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    sort: Literal["score", "age", "ts"] = "score"
    order: Literal["asc", "desc"] = "desc"
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(50, ge=1, le=500)


class DecisionBody(_Strict):
    decision: Literal["approve", "reject"]
    note: str = Field(min_length=3, max_length=2000)


class SettingBody(_Strict):
    value: str = Field(max_length=2000)


class AuditQuery(_Strict):
    limit: int = Field(100, ge=1, le=1000)
    before_id: int | None = Field(None, ge=1)


def problem(status: int, detail: str, errors: list[Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": detail}
    if errors:
        body["fields"] = errors
    return JSONResponse(body, status_code=status)


def invalid(exc: ValidationError) -> JSONResponse:
    fields = [
        {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
        for e in exc.errors(include_url=False)
    ]
    return problem(422, "invalid input", fields)


def create_app(store: QuarantineStore, registry: CollectorRegistry | None = None) -> Starlette:
    """The review service's ASGI app over one store."""

    def authed(
        role: Literal["reviewer", "admin"] = "reviewer",
    ) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
        def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                header = request.headers.get("authorization", "")
                scheme, _, token = header.partition(" ")
                who = (
                    await run_in_threadpool(store.principal, token.strip())
                    if (scheme.lower() == "bearer" and token.strip())
                    else None
                )
                if who is None:
                    return problem(401, "a valid API token is required (Authorization: Bearer ...)")
                if role == "admin" and who.role != "admin":
                    return problem(403, "this needs the admin role")
                try:
                    return await handler(request, who)
                except ValidationError as exc:
                    return invalid(exc)
                except BadRequest as exc:
                    return problem(400, str(exc))

            return endpoint

        return wrap

    async def read_json(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise BadRequest("the request body must be a JSON object") from None

    @authed()
    async def me(request: Request, who: Principal) -> Response:
        return JSONResponse({"name": who.name, "role": who.role})

    @authed()
    async def queue(request: Request, who: Principal) -> Response:
        q = QueueQuery.model_validate(dict(request.query_params))
        f = QueueFilter(
            q.status,
            q.detector,
            q.item_id,
            q.campaign_id,
            q.min_score,
            q.sort,
            q.order == "desc",
            q.page,
            q.page_size,
        )
        total, rows = await run_in_threadpool(store.queue, f)
        return JSONResponse(
            {"total": total, "page": q.page, "page_size": q.page_size, "events": rows}
        )

    @authed()
    async def event(request: Request, who: Principal) -> Response:
        row = await run_in_threadpool(store.event, request.path_params["event_id"])
        return JSONResponse(row) if row else problem(404, "no such quarantined event")

    @authed()
    async def campaigns(request: Request, who: Principal) -> Response:
        status = request.query_params.get("status", "pending")
        if status not in STATUS:
            return problem(422, f"status must be one of {', '.join(STATUS)}")
        return JSONResponse({"campaigns": await run_in_threadpool(store.campaigns, status)})

    @authed()
    async def campaign(request: Request, who: Principal) -> Response:
        row = await run_in_threadpool(store.campaign, request.path_params["campaign_id"])
        return JSONResponse(row) if row else problem(404, "no such campaign in the quarantine")

    @authed()
    async def decide_event(request: Request, who: Principal) -> Response:
        body = DecisionBody.model_validate(await read_json(request))
        event_id = request.path_params["event_id"]
        if await run_in_threadpool(store.event, event_id) is None:
            return problem(404, "no such quarantined event")
        changed = await run_in_threadpool(
            store.decide, who, [event_id], body.decision, body.note, f"event:{event_id}"
        )
        return JSONResponse({"changed": changed, "decision": body.decision})

    @authed()
    async def decide_campaign(request: Request, who: Principal) -> Response:
        body = DecisionBody.model_validate(await read_json(request))
        campaign_id = request.path_params["campaign_id"]
        ids = await run_in_threadpool(store.pending_ids, campaign_id)
        if not ids and await run_in_threadpool(store.campaign, campaign_id) is None:
            return problem(404, "no such campaign in the quarantine")
        changed = await run_in_threadpool(
            store.decide, who, ids, body.decision, body.note, f"campaign:{campaign_id}"
        )
        return JSONResponse({"changed": changed, "decision": body.decision})

    @authed()
    async def audit(request: Request, who: Principal) -> Response:
        q = AuditQuery.model_validate(dict(request.query_params))
        return JSONResponse({"entries": await run_in_threadpool(store.audit, q.limit, q.before_id)})

    @authed()
    async def get_settings(request: Request, who: Principal) -> Response:
        return JSONResponse(await run_in_threadpool(store.settings))

    @authed("admin")
    async def put_setting(request: Request, who: Principal) -> Response:
        key = request.path_params["key"]
        if not key.replace("_", "").isalnum() or len(key) > 64:
            return problem(422, "setting keys are letters, digits and underscores")
        body = SettingBody.model_validate(await read_json(request))
        await run_in_threadpool(store.put_setting, who, key, body.value)
        return JSONResponse({"key": key, "value": body.value})

    async def page(request: Request) -> Response:
        html = resources.files("streamguard.quarantine").joinpath("static/index.html").read_text()
        return HTMLResponse(
            html,
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline';"
                " style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def metrics(request: Request) -> Response:
        return Response(
            generate_latest(registry) if registry else b"", media_type=CONTENT_TYPE_LATEST
        )

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    routes = [
        Route("/", page),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/api/me", me),
        Route("/api/queue", queue),
        Route("/api/events/{event_id:path}/decision", decide_event, methods=["POST"]),
        Route("/api/events/{event_id:path}", event),
        Route("/api/campaigns", campaigns),
        Route("/api/campaigns/{campaign_id}/decision", decide_campaign, methods=["POST"]),
        Route("/api/campaigns/{campaign_id}", campaign),
        Route("/api/audit", audit),
        Route("/api/settings", get_settings),
        Route("/api/settings/{key}", put_setting, methods=["PUT"]),
    ]
    return Starlette(routes=routes)


__all__ = ["SORTS", "create_app"]
