"""OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``, and the statuses we answer with."""

from __future__ import annotations

import json
from typing import Any

# status -> (OpenAI error type, default code)
KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_schema"),
    429: ("rate_limit_error", "queue_full"),
    500: ("server_error", None),
    503: ("server_error", "unavailable"),
    504: ("server_error", "timeout"),
}


class APIError(Exception):
    """An answer with an error status: raised anywhere in a request, turned into OpenAI's error JSON."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or KINDS.get(status, ("", None))[1]
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind, default = KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default}}


def error_bytes(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(error_body(status, message, param, code)).encode()
