"""HTTP pieces every service shares: RFC 9457 problem details, health and metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import structlog
import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import deadletters, jsonpointer, limits
from .auth import Caller, install_auth, require
from .auth.identity import METRICS_READ, OPS
from .logging import configure_logging
from .messages.base import Chars, Id, Timestamp
from .problems import PROBLEM_JSON as PROBLEM_JSON
from .problems import FieldProblem as FieldProblem
from .problems import Problem as Problem
from .problems import ProblemDetails as ProblemDetails
from .service import ServiceRuntime
from .settings import ServiceSettings

log = structlog.get_logger(__name__)

OpsDep = Annotated[Caller, Depends(require(OPS))]
MetricsDep = Annotated[Caller, Depends(require(OPS, METRICS_READ))]


class DeadLetterView(BaseModel):
    dlq: str
    queue: str
    message_id: str | None
    message_type: str | None
    correlation_id: str | None
    code: str = Field(
        description="Why, as a refusal code (docs/integration.md, Refusals and their codes)"
    )
    reason: str
    dead_lettered_at: Timestamp | None
    service: str | None
    headers: dict[str, Any]
    body: str


MessageIds = Annotated[list[Id], Field(max_length=limits.MAX_MESSAGE_IDS)]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    all: bool = False
    message_ids: MessageIds = Field(default_factory=list)


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    message_ids: MessageIds = Field(min_length=1)
    note: Annotated[str, Chars(limits.REMARK, min_length=1, lines=True)] = Field(
        description="Why it is dropped, for the record"
    )


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ProblemDetails, "description": "Invalid input; every field problem listed"},
}

UNKNOWN_DLQ: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemDetails, "description": "Not one of this service's dead-letter queues"},
}


#: What any route can answer besides its own: the edge refuses a malformed request (400: a
#: NUL byte in the path, the query or a header) and a JSON body over the size limit (413);
#: 500 is the last resort, never meant to happen.
COMMON_PROBLEMS: dict[str, str] = {
    "400": "Malformed request: a NUL byte in the path, the query or a header",
    "413": f"A JSON body larger than {limits.MAX_JSON_BODY_BYTES} bytes",
    "422": "Invalid input; every field problem listed",
    "500": "Unexpected error (a bug): nothing about it is disclosed; the log has it",
}


def pointer(loc: Sequence[str | int]) -> str:
    return jsonpointer.join(loc)


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
        if isinstance(exc, BodyTooLarge):
            detail = f"a JSON body may have at most {exc.limit} bytes"
            errors = [FieldProblem(pointer="/", detail=detail)]
            return problem_response(
                Problem(413, "Request body too large", detail, errors=errors), request
            )
        return problem_response(
            Problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)),
            request,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the last resort: the client learns nothing of the internals, the log has it all
        log.exception("unexpected error answering a request", path=request.url.path)
        return problem_response(
            Problem(500, "Internal error", "the request could not be handled; it is logged"),
            request,
        )


def _refusal(scope: Scope, status: int, title: str, detail: str, where: str) -> JSONResponse:
    body = ProblemDetails(
        type="urn:orderflow:problem:malformed-request" if status == 400 else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=scope.get("path", "").replace("\x00", ""),
        errors=[FieldProblem(pointer=where, detail=detail)],
    ).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in; an HTTP exception, so that the framework's body
    reading passes it on as it is (413), not as a parse error (400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "Request body too large")
        self.limit = limit


class RequestGuard:
    """The first line at the edge, before any route: a NUL byte in the path, the query or a
    header is refused with 400 (PostgreSQL cannot store one, and no field needs it), and a
    JSON body over `max_json_bytes` with 413, as soon as its length is known (declared or
    counted while it streams in): it is never read whole."""

    def __init__(self, app: ASGIApp, *, max_json_bytes: int = limits.MAX_JSON_BODY_BYTES):
        self.app = app
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refused(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if not self._is_json(scope):
            await self.app(scope, receive, send)
            return
        await self._bounded(scope, receive, send)

    def _refused(self, scope: Scope) -> JSONResponse | None:
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        if b"\x00" in raw_path or b"%00" in raw_path or "\x00" in scope.get("path", ""):
            return _refusal(scope, 400, "Malformed request", "NUL in the path", "path:/")
        query: bytes = scope.get("query_string", b"")
        if b"\x00" in query or b"%00" in query:
            return _refusal(scope, 400, "Malformed request", "NUL in the query", "query:/")
        for name, value in scope.get("headers", []):
            if b"\x00" in value:
                where = f"header:/{name.decode('latin-1')}"
                return _refusal(scope, 400, "Malformed request", "NUL in a header", where)
        declared = self._header(scope, b"content-length")
        if self._is_json(scope) and declared.isdigit() and int(declared) > self.max_json_bytes:
            return self._too_large(scope)
        return None

    def _too_large(self, scope: Scope) -> JSONResponse:
        detail = f"a JSON body may have at most {self.max_json_bytes} bytes"
        return _refusal(scope, 413, "Request body too large", detail, "/")

    @staticmethod
    def _header(scope: Scope, name: bytes) -> str:
        for key, value in scope.get("headers", []):
            if key.lower() == name:
                return str(value.decode("latin-1").strip())
        return ""

    def _is_json(self, scope: Scope) -> bool:
        # FastAPI reads a body without a content type as JSON too
        media = self._header(scope, b"content-type").split(";")[0].strip().lower()
        return media in ("", "application/json") or media.endswith("+json")

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_json_bytes:
                    raise BodyTooLarge(self.max_json_bytes)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, sending)
        except BodyTooLarge:
            if started:
                raise
            await self._too_large(scope)(scope, receive, send)


#: Routes anyone may call: the probes and signing in.
PUBLIC_PATHS = frozenset({"/health/live", "/health/ready", "/auth/login"})
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`ofk_…`), a session token from `POST /auth/login` (`ofs_…`) or "
    "an access token of the configured OpenID Connect provider",
}
SIGNED_IN_PROBLEMS = {
    "401": "No credential, or one that is unknown, revoked or expired",
    "403": "The caller's roles do not allow this",
}


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}


def document_problems(app: FastAPI) -> None:
    """Every error answer in the OpenAPI document as what it is, `application/problem+json`
    with the ProblemDetails schema; and on every route the problems any route can give."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        if "ProblemDetails" not in schemas:
            found = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(found.pop("$defs", {}))
            schemas["ProblemDetails"] = found
        schema["components"].setdefault("securitySchemes", {})["bearer"] = BEARER_SCHEME
        for route, path in schema.get("paths", {}).items():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                if route not in PUBLIC_PATHS:
                    operation["security"] = [{"bearer": []}]
                    for status, description in SIGNED_IN_PROBLEMS.items():
                        responses.setdefault(status, {"description": description})
                for status, description in COMMON_PROBLEMS.items():
                    if status == "413" and "requestBody" not in operation:
                        continue
                    responses.setdefault(status, {"description": description})
                if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                    # an id in the path may name nothing
                    responses.setdefault("404", {"description": "Not found"})
                for status, response in responses.items():
                    if status[0] in "45":
                        response["content"] = _problem_content()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_operational_routes(app: FastAPI, runtime: ServiceRuntime) -> None:
    """Health, the service's own dead letters, and the metrics."""
    _install_health_routes(app, runtime)
    _install_dead_letter_routes(app, runtime)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics(caller: MetricsDep) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _install_health_routes(app: FastAPI, runtime: ServiceRuntime) -> None:
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


def _own_dlqs(runtime: ServiceRuntime) -> list[str]:
    return sorted({spec.dlq for spec in runtime.queues})


def _own_dlq(runtime: ServiceRuntime, dlq: str, where: str) -> str:
    """Only this service's own `.dlq` queues: never a work queue, nor another's."""
    if dlq not in _own_dlqs(runtime):
        raise Problem(
            404,
            "No such dead-letter queue",
            f"{dlq[:200]!r} is not one of this service's dead-letter queues: "
            f"{', '.join(_own_dlqs(runtime))}",
            type_="urn:orderflow:problem:unknown-dead-letter-queue",
            errors=[FieldProblem(pointer=where, detail="not a dead-letter queue of this service")],
        )
    return dlq


def _install_dead_letter_routes(app: FastAPI, runtime: ServiceRuntime) -> None:
    @app.get("/ops/dead-letters", tags=["operations"], responses=UNKNOWN_DLQ)
    async def dead_letters(
        caller: OpsDep,
        queue: Annotated[str | None, Query(max_length=limits.SHORT_TEXT)] = None,
        reason: Annotated[str | None, Query(max_length=limits.SHORT_TEXT)] = None,
        code: Annotated[
            str | None,
            Query(max_length=limits.SHORT_TEXT, description="only those with this refusal code"),
        ] = None,
    ) -> list[DeadLetterView]:
        """Dead letters of this service's queues (or of one `.dlq`), with their codes and
        reasons; `code` and `reason` (a part of the text) filter them."""
        found = []
        for dlq in [_own_dlq(runtime, queue, "query:/queue")] if queue else _own_dlqs(runtime):
            letters = await deadletters.list_dead_letters(runtime.publisher.connection, dlq)
            found += [DeadLetterView(dlq=dlq, **d.as_dict()) for d in letters]
        return [
            d
            for d in found
            if (reason is None or reason in d.reason) and (code is None or d.code == code)
        ]

    @app.post("/ops/dead-letters/{dlq}/replay", tags=["operations"], responses=UNKNOWN_DLQ)
    async def replay_dead_letters(
        dlq: str, body: ReplayRequest, caller: OpsDep
    ) -> dict[str, list[str]]:
        """Send dead letters back to the queue they failed in, after a fix."""
        _own_dlq(runtime, dlq, "path:/dlq")
        ids = None if body.all else set(body.message_ids)
        if ids is not None and not ids:
            raise Problem(422, "Nothing to replay", "give message_ids, or all: true")
        done = await deadletters.replay(runtime.publisher.connection, dlq, message_ids=ids)
        return {"replayed": done}

    @app.post("/ops/dead-letters/{dlq}/discard", tags=["operations"], responses=UNKNOWN_DLQ)
    async def discard_dead_letters(
        dlq: str, body: DiscardRequest, caller: OpsDep
    ) -> dict[str, list[str]]:
        """Drop dead letters for good, with a note; a copy is kept in `ops.discarded`."""
        _own_dlq(runtime, dlq, "path:/dlq")
        done = await deadletters.discard(
            runtime.publisher.connection,
            dlq,
            message_ids=set(body.message_ids),
            note=body.note,
            by=caller.id,
        )
        return {"discarded": done}


def create_service_app(
    runtime: ServiceRuntime, *, title: str, description: str, version: str = "0.1.0"
) -> FastAPI:
    """A FastAPI app whose lifespan runs the service runtime."""
    app = FastAPI(title=title, description=description, version=version, lifespan=runtime.lifespan)
    app.state.runtime = runtime
    app.add_middleware(RequestGuard)
    install_problem_handlers(app)
    install_auth(app, runtime, runtime.settings.auth)
    install_operational_routes(app, runtime)
    document_problems(app)
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
