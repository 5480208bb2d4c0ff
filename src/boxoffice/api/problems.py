"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every refusal is a 4xx with a ``detail`` a person can act on and a stable ``code`` a program can
branch on. A 5xx means a bug (or the database being down), never a buyer's mistake.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from boxoffice.domain import errors
from boxoffice.log import kv

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """The body of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


class ApiProblem(Exception):
    """An error raised by the HTTP layer itself (authentication, headers, limits)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    428: "Header required",
    500: "Internal error",
    503: "Busy, try again",
}


def status_for(exc: errors.BoxofficeError) -> int:
    """The HTTP status of a domain error: the one place this mapping lives."""
    if isinstance(exc, errors.InvalidSaleTransition):
        return 409  # a valid request the sale's current state refuses (a closed sale stays closed)
    if isinstance(exc, errors.InvalidRequest):
        return 422
    if isinstance(exc, errors.NotFound):
        return 404
    if isinstance(exc, errors.Forbidden):
        return 403
    if isinstance(exc, errors.ContentionTimeout):
        return 503
    # Refused by a rule that depends on the current state: sold out, limit, not on sale, key reuse.
    return 409


def problem_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=TITLES.get(status, "Error"), status=status, detail=detail, code=code)
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'is invalid')}")
    return "; ".join(parts) or "the request is invalid"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(errors.BoxofficeError)
    async def _domain(request: Request, exc: errors.BoxofficeError) -> JSONResponse:
        status = status_for(exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return problem_response(status, exc.code, exc.message, headers)

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(422, "invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return problem_response(exc.status_code, f"http_{exc.status_code}", detail,
                                dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        kv(log, logging.ERROR, "api.bug", method=request.method, path=request.url.path,
           error=type(exc).__name__, message=str(exc))
        log.exception("unhandled error")
        return problem_response(500, "internal_error",
                                "something went wrong on our side; it has been logged")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the documented errors of an endpoint."""
    return {
        s: {"model": Problem, "description": TITLES.get(s, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for s in statuses
    }
