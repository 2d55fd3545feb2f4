"""The shared HTTP edge: NUL bytes and oversized JSON bodies refused before any route, and an
unexpected error answered as a bare problem+json 500."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from orderflow import limits
from orderflow.http import PROBLEM_JSON, RequestGuard, document_problems, install_problem_handlers


def edge_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestGuard)
    install_problem_handlers(app)

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    @app.get("/broken/{thing}")
    async def broken(thing: str) -> None:
        raise RuntimeError("password=hunter2 at db.internal:5432")

    document_problems(app)
    return app


def client() -> httpx.AsyncClient:
    # as a server would: an exception the app answered is not raised again to the caller
    transport = httpx.ASGITransport(app=edge_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_an_unexpected_error_is_a_problem_without_internals() -> None:
    async with client() as http:
        response = await http.get("/broken/x")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert response.json()["title"] == "Internal error"


async def test_nul_bytes_in_the_query_or_path_are_a_bad_request() -> None:
    async with client() as http:
        assert (await http.get("/broken/a%00b")).status_code == 400
        response = await http.post("/echo?x=%00", json={})
    assert response.status_code == 400
    assert response.json()["errors"] == [{"pointer": "query:/", "detail": "NUL in the query"}]


async def test_a_json_body_over_the_limit_is_refused_declared_or_streamed() -> None:
    big = b'{"a": "' + b"x" * limits.MAX_JSON_BODY_BYTES + b'"}'

    async def streamed() -> Any:
        for start in range(0, len(big), 1 << 16):
            yield big[start : start + (1 << 16)]

    headers = {"content-type": "application/json"}
    async with client() as http:
        declared = await http.post("/echo", content=big, headers=headers)
        chunked = await http.post("/echo", content=streamed(), headers=headers)
        untyped = await http.post("/echo", content=big)
        small = await http.post("/echo", json={"a": "x"})
    assert declared.status_code == 413 and chunked.status_code == 413
    assert untyped.status_code == 413
    assert chunked.headers["content-type"] == PROBLEM_JSON
    assert [e["pointer"] for e in chunked.json()["errors"]] == ["/"]
    assert small.status_code == 200


def test_every_error_answer_is_documented_as_problem_json() -> None:
    document = edge_app().openapi()
    for path in document["paths"].values():
        for operation in path.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == [PROBLEM_JSON], (status, response)
    assert set(document["paths"]["/echo"]["post"]["responses"]) >= {"400", "413", "422", "500"}
    assert "404" in document["paths"]["/broken/{thing}"]["get"]["responses"]
