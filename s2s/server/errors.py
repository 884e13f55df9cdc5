"""OpenAI-shaped JSON errors: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status.

Routes raise ``APIError`` (or a subclass); ``install(app)`` makes every other failure take the same shape:
FastAPI's validation errors become 400 naming the field, unknown paths 404, and an unexpected exception 500
(logged with its traceback; the message does not leak internals).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
         500: "server_error", 503: "server_error", 504: "server_error"}
"""The OpenAI error ``type`` of each status."""


class APIError(Exception):
    """An error answered as OpenAI's error object; ``headers`` go with it (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def _validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    reason = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        return bad_request(f"the request body is not valid JSON (or not UTF-8): {reason}", None, "invalid_json")
    if first.get("type") == "missing":
        return bad_request(f"missing required parameter: {param}", param, "missing_required_parameter")
    return bad_request(f"invalid value for {param}: {reason}", param, "invalid_value")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        code = None
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 400:  # FastAPI could not parse the body: not UTF-8, or broken multipart
            message, code = (f"{message}: send UTF-8 JSON, or well-formed multipart/form-data for uploads",
                             "invalid_body")
        return APIError(exc.status_code, message, code=code, headers=dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return APIError(500, f"internal error ({type(exc).__name__}); the server log has the details").response()
