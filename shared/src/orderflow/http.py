"""HTTP pieces every service shares: RFC 9457 problem details, health and metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from . import deadletters
from .auth import Caller, install_auth, require
from .auth.identity import METRICS_READ, OPS
from .logging import configure_logging
from .problems import PROBLEM_JSON as PROBLEM_JSON
from .problems import FieldProblem as FieldProblem
from .problems import Problem as Problem
from .problems import ProblemDetails as ProblemDetails
from .service import ServiceRuntime
from .settings import ServiceSettings

OpsDep = Annotated[Caller, Depends(require(OPS))]
MetricsDep = Annotated[Caller, Depends(require(OPS, METRICS_READ))]


class DeadLetterView(BaseModel):
    dlq: str
    queue: str
    message_id: str | None
    message_type: str | None
    correlation_id: str | None
    reason: str
    dead_lettered_at: str | None
    service: str | None
    headers: dict[str, Any]
    body: str


class ReplayRequest(BaseModel):
    all: bool = False
    message_ids: list[str] = Field(default_factory=list)


class DiscardRequest(BaseModel):
    message_ids: list[str] = Field(min_length=1)
    note: str = Field(min_length=1, description="Why it is dropped, for the record")


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ProblemDetails, "description": "Invalid input; every field problem listed"},
}


def pointer(loc: Sequence[str | int]) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts) if parts else ""


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    body = ProblemDetails(
        type=problem.type,
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=str(request.url.path),
        errors=problem.errors,
    ).model_dump(exclude_none=True)
    body.update(problem.extra)
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            where = loc[0] if loc else "body"
            rest = loc[1:] if where in ("body", "query", "path", "header") else loc
            ptr = pointer(rest)
            if where != "body":
                ptr = f"{where}:{ptr or '/'}"
            errors.append(FieldProblem(pointer=ptr or "/", detail=str(err.get("msg", "invalid"))))
        return problem_response(
            Problem(
                422,
                "Invalid request",
                f"{len(errors)} problem(s) in the request",
                type_="urn:orderflow:problem:invalid-request",
                errors=errors,
            ),
            request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            Problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)),
            request,
        )


def install_operational_routes(app: FastAPI, runtime: ServiceRuntime) -> None:
    @app.get("/health/live", tags=["operations"])
    async def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/health/ready", tags=["operations"])
    async def ready() -> JSONResponse:
        """Database and broker reachable; 503 otherwise."""
        checks = await runtime.ready()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    own = sorted({spec.dlq for spec in runtime.queues})

    @app.get("/ops/dead-letters", tags=["operations"])
    async def dead_letters(
        caller: OpsDep, queue: str | None = None, reason: str | None = None
    ) -> list[DeadLetterView]:
        """Dead letters of this service's queues (or of one `.dlq`), with their reasons."""
        found = []
        for dlq in [queue] if queue else own:
            letters = await deadletters.list_dead_letters(runtime.publisher.connection, dlq)
            found += [DeadLetterView(dlq=dlq, **d.as_dict()) for d in letters]
        return [d for d in found if reason is None or reason in d.reason]

    @app.post("/ops/dead-letters/{dlq}/replay", tags=["operations"])
    async def replay_dead_letters(
        dlq: str, body: ReplayRequest, caller: OpsDep
    ) -> dict[str, list[str]]:
        """Send dead letters back to the queue they failed in, after a fix."""
        ids = None if body.all else set(body.message_ids)
        if ids is not None and not ids:
            raise Problem(422, "Nothing to replay", "give message_ids, or all: true")
        done = await deadletters.replay(runtime.publisher.connection, dlq, message_ids=ids)
        return {"replayed": done}

    @app.post("/ops/dead-letters/{dlq}/discard", tags=["operations"])
    async def discard_dead_letters(
        dlq: str, body: DiscardRequest, caller: OpsDep
    ) -> dict[str, list[str]]:
        """Drop dead letters for good, with a note; a copy is kept in `ops.discarded`."""
        done = await deadletters.discard(
            runtime.publisher.connection,
            dlq,
            message_ids=set(body.message_ids),
            note=body.note,
            by=caller.id,
        )
        return {"discarded": done}

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics(caller: MetricsDep) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_service_app(
    runtime: ServiceRuntime, *, title: str, description: str, version: str = "0.1.0"
) -> FastAPI:
    """A FastAPI app whose lifespan runs the service runtime."""
    app = FastAPI(title=title, description=description, version=version, lifespan=runtime.lifespan)
    app.state.runtime = runtime
    install_problem_handlers(app)
    install_auth(app, runtime, runtime.settings.auth)
    install_operational_routes(app, runtime)
    return app


def serve(service: str, settings: ServiceSettings, create_app: Callable[..., FastAPI]) -> None:
    """Run a service's app under uvicorn until SIGTERM or Ctrl-C, then stop gracefully."""
    configure_logging(
        service,
        level=settings.log_level,
        json=settings.log_json,
        secrets=settings.secret_values(),
    )
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.graceful_timeout),
    )
