"""The ASGI middleware in front of every ``/v1/`` request, in this order, before the body is read:

1. **API key** (when the server has one): ``Authorization: Bearer KEY``, compared with
   :func:`hmac.compare_digest` -> 401.
2. **Declared size**: a ``Content-Length`` above ``--max-body-mb`` -> 413 without reading a byte.
3. **Admission** (:class:`Gate`): at most ``--max-concurrent`` requests are worked on at once and at most
   ``--max-queue`` wait for a slot, first come first served; past that -> 429 with ``Retry-After``; a
   request still waiting at its deadline -> 504; while shutting down -> 503 with ``Retry-After``.
4. **Body**: read in full with a running count (413 once it passes the limit, whatever the header said)
   and a clock (400 when it has not arrived in ``--body-timeout`` s: a ``Content-Length`` that promises
   more than is sent), then replayed to the app.

So a request's body sits in memory only once it holds a slot, and memory stays bounded by
``(max_concurrent + max_queue) x max_body`` at worst. Every request's deadline
(``scope["state"]["deadline"]``, ``time.monotonic()`` seconds) is set here from ``--request-timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import time
from typing import Any

from auralm.serve.config import ServeConfig
from auralm.serve.errors import APIError


class Gate:
    """Admission: ``slots`` requests at once, ``queue`` more waiting in arrival order (see the module docstring)."""

    def __init__(self, slots: int, queue: int, retry_after: int = 1):
        self.slots, self.queue, self.retry_after = slots, queue, retry_after
        self.active = 0
        self.closing = False
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self.refused = 0

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def _busy(self, status: int, message: str) -> APIError:
        self.refused += 1
        return APIError(status, message, headers={"Retry-After": str(self.retry_after)})

    async def enter(self, deadline: float) -> None:
        if self.closing:
            raise self._busy(503, "the server is shutting down; retry on another replica or later")
        if self.active < self.slots and not self.waiting:
            self.active += 1
            return
        if self.waiting >= self.queue:
            raise self._busy(429, f"the server is busy: {self.active} requests in work and {self.waiting} waiting "
                                  f"(--max-concurrent {self.slots}, --max-queue {self.queue}); retry after "
                                  f"{self.retry_after} s")
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, max(0.001, deadline - time.monotonic()))
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if fut.done() and not fut.cancelled():  # the slot came just as we gave up: pass it on
                self.leave()
            elif fut in self._waiters:
                self._waiters.remove(fut)
            if isinstance(exc, asyncio.TimeoutError):
                raise APIError(504, "the request waited for a free slot past its deadline (--request-timeout)") from None
            raise

    def leave(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the next in line
                return
        self.active -= 1


class Guard:
    """Pure ASGI middleware (``app.add_middleware(Guard, cfg=..., gate=...)``)."""

    def __init__(self, app: Any, cfg: ServeConfig, gate: Gate):
        self.app, self.cfg, self.gate = app, cfg, gate
        self.key = cfg.api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        state["deadline"] = time.monotonic() + self.cfg.request_timeout
        if not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        try:
            self._check_key(headers.get("authorization", b""))
            declared = self._declared(headers.get("content-length"))
        except APIError as err:
            return await send_error(send, err)
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        try:
            await self.gate.enter(state["deadline"])
        except APIError as err:
            return await send_error(send, err)
        try:
            try:
                body = await self._read(receive, declared)
            except APIError as err:
                return await send_error(send, err)
            if body is None:  # the client went away
                return
            sent = False

            async def replay() -> dict:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.gate.leave()

    def _check_key(self, auth: bytes) -> None:
        if not self.key:
            return
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            raise APIError(401, "missing API key: send 'Authorization: Bearer KEY'")
        if not hmac.compare_digest(token.strip(), self.key):
            raise APIError(401, "incorrect API key")

    def _declared(self, value: bytes | None) -> int | None:
        if value is None:
            return None
        try:
            declared = int(value)
        except ValueError:
            raise APIError(400, f"Content-Length {value[:20].decode('latin-1')!r} is not a number") from None
        if declared > self.cfg.max_body_bytes:
            raise APIError(413, f"the request body is {declared} bytes; this server takes at most "
                                f"{self.cfg.max_body_bytes} bytes (--max-body-mb {self.cfg.max_body_mb:g})")
        return declared

    async def _read(self, receive: Any, declared: int | None) -> bytes | None:
        parts: list[bytes] = []
        got = 0
        end = time.monotonic() + self.cfg.body_timeout
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(0.001, end - time.monotonic()))
            except asyncio.TimeoutError:
                said = f"Content-Length says {declared} bytes; " if declared is not None else ""
                raise APIError(400, f"the request body did not arrive in full within {self.cfg.body_timeout:g} s "
                                    f"({said}{got} arrived, --body-timeout)", code="incomplete_body") from None
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            got += len(chunk)
            if got > self.cfg.max_body_bytes:
                raise APIError(413, f"the request body is more than {self.cfg.max_body_bytes} bytes, the most this "
                                    f"server takes (--max-body-mb {self.cfg.max_body_mb:g})")
            parts.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(parts)


async def send_error(send: Any, err: APIError) -> None:
    """The error as the whole response; the connection is closed after it (the body may be unread)."""
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in err.headers.items()]
    if err.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
