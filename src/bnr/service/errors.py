"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the matching status.

Permanent errors carry `x-should-retry: false`, so the official SDK does not retry them; a 429 for a full queue or
a concurrency cap is worth retrying later and carries `retry-after`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
}


class ApiError(Exception):
    """An error answered to the client; `retry` decides the `x-should-retry` header."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None, retry: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry = status, message, param, code, retry


def not_found(what: str, ident: str, param: str | None = None) -> ApiError:
    """The answer for an object that does not exist *or belongs to another organization* (never 403)."""
    return ApiError(404, f"No such {what}: {ident!r}", param=param, code=f"{what.replace(' ', '_')}_not_found")


def body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param, "code": code}
    }


def response(err: ApiError) -> JSONResponse:
    headers = {"x-should-retry": "true" if err.retry else "false"}
    if err.status == 429 and err.retry:
        headers["retry-after"] = "5"
    return JSONResponse(body(err.status, err.message, err.param, err.code), status_code=err.status, headers=headers)


def install(app: FastAPI) -> None:
    """Route every error through `response`: ours, FastAPI's validation errors and unknown routes."""

    @app.exception_handler(ApiError)
    async def _api(_req: Request, exc: ApiError) -> JSONResponse:
        return response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        msg = f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg", "invalid request"))
        return response(ApiError(400, msg, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return response(
            ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        )

    @app.exception_handler(Exception)
    async def _crash(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return response(ApiError(500, "internal server error", code="server_error", retry=True))
