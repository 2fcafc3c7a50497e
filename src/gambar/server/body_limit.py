"""A cap on request bodies: 413 with a one-line error, never the whole body in memory.

A declared Content-Length over the cap is refused before a byte of the body is read; a body
without one (chunked) is counted as it streams in and refused at the chunk that crosses the cap,
so at most the cap plus one chunk (uvicorn reads 64 KiB at a time) is ever held. Every body this
server takes is a small JSON object (prompts are at most 500 characters), so the default cap of
1 MiB leaves room for any client's extra fields.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gambar.server.errors import error_response


def too_large_message(max_bytes: int) -> str:
    return (f"the request body is over {max_bytes // 1024} KiB, this server's limit "
            "(gambar serve --max-body-kb); send a smaller one")


class BodyLimit:
    """ASGI middleware refusing bodies over `max_bytes` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal received, refused
            event = await receive()
            if event["type"] == "http.request" and not refused:
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    # Answer here and tell the app the client left: it stops reading, and what
                    # it answers to that is dropped below. (Raising instead would reach the
                    # handler wrapped in an ExceptionGroup by the auth middleware's task group.)
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return event

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = True
            await send(message)

        await self.app(scope, counted, guarded)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 413 answer, built only for a request that gets it (not for every request)."""
        refusal = error_response(Request(scope), 413, too_large_message(self.max_bytes),
                                 headers={"Connection": "close"})  # rather than read the rest
        await refusal(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body size, or None if the request declares none (or an unreadable one:
    the HTTP server refuses those itself)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if not value.isdigit():
                return None
            return int(value) if len(value) < 19 else 2**63  # int() refuses 4300+ digits
    return None
