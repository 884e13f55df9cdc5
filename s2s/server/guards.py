"""ASGI middleware in front of the routes: the API key, and the body size limits.

Both are plain ASGI (no ``BaseHTTPMiddleware``), so streamed responses and client disconnects pass through
untouched.

- ``ApiKey``: with a key set, every path but ``/health`` needs ``Authorization: Bearer KEY``, compared in
  constant time (``hmac.compare_digest``); otherwise a 401 in OpenAI's shape.
- ``BodyLimit``: a request whose ``Content-Length`` exceeds the limit is answered 413 before its body is read;
  a body without a length (chunked) is counted while it is read and cut off with the same 413 once over the
  limit. Multipart uploads (transcriptions, voices) have their own, larger, limit.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from starlette.exceptions import HTTPException

from s2s.config import ServerConfig
from s2s.server.errors import APIError

API_KEY_ENV = "S2S_API_KEY"
OPEN_PATHS = ("/health",)
"""Paths served without the key (monitoring)."""
MB = 1_000_000


def api_key(cfg: ServerConfig) -> str:
    """The key clients must send: ``api_key``, else the first line of ``api_key_file``, else ``$S2S_API_KEY``,
    else "" (none). FileNotFoundError / ValueError saying what to fix for a missing, unreadable or empty file."""
    if cfg.api_key:
        return cfg.api_key.strip()
    if cfg.api_key_file:
        path = Path(cfg.api_key_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"server.api_key_file = {cfg.api_key_file!r} does not exist; create it with the "
                                    "key on its first line, or leave the setting empty")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"server.api_key_file = {cfg.api_key_file!r} cannot be read: {exc}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"server.api_key_file = {cfg.api_key_file!r} is empty; put the key on its first line")
        return key
    return os.environ.get(API_KEY_ENV, "").strip()


async def _send_error(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiKey:
    def __init__(self, app, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.key or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                given = token.strip() if scheme.lower() == b"bearer" else b""
        if not hmac.compare_digest(given, self.key):
            error = APIError(401, "missing or incorrect API key: send the header 'Authorization: Bearer KEY' with "
                                  "the server's key", code="invalid_api_key",
                             headers={"www-authenticate": "Bearer"})
            return await _send_error(send, error)
        return await self.app(scope, receive, send)


class BodyTooLarge(APIError, HTTPException):
    """Raised from ``receive`` while the body is read; an HTTPException too, so that FastAPI's body parsing passes
    it on as it is (it turns other exceptions into a 400)."""

    def __init__(self, limit: int) -> None:
        message = f"the request body is larger than the server's limit of {limit / MB:g} MB"
        APIError.__init__(self, 413, message, code="request_too_large")
        self.status_code, self.detail = 413, message


class BodyLimit:
    def __init__(self, app, max_body: int, max_upload: int, upload_paths: tuple[str, ...]) -> None:
        self.app = app
        self.max_body, self.max_upload, self.upload_paths = max_body, max_upload, upload_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_upload if scope["path"] in self.upload_paths else self.max_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await _send_error(send, APIError(400, "Content-Length is not a number"))
                if length > limit:
                    return await _send_error(send, BodyTooLarge(limit))
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, counted_receive, send)

