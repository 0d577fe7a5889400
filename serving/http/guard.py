"""Memory bounds that must hold before a body is parsed, and across concurrent requests.

- `BodyGuard` (ASGI middleware, inside JSONErrorMiddleware's size and time limits):
  - a JSON body is counted before anything parses it: more rows ('[' or '{') or more cells
    (',') than VAE_MAX_ROWS allows is a 400 at once. Parsing 15 million one-cell rows into
    Python lists took a worker to 3.9 GB even though the answer was a 400;
  - at most VAE_MAX_UPLOADS uploads and VAE_MAX_INFLIGHT_BYTES of JSON bodies are taken in
    at once per worker; beyond, a 503 with Retry-After (the client retries, the pod lives).
- `Budget`: graph work in flight per worker, in row-samples; a request waits for its share.
"""

import asyncio
import contextlib

from serving.framework.logs import log_refused
from serving.http.errors import refuse, send_error

RETRY_AFTER = b"1"


class BodyGuard:
    def __init__(self, app, max_rows: int, width: int, max_uploads: int,
                 max_inflight_bytes: int, max_json_bytes: int):
        self.app = app
        self.max_rows = max_rows
        self.max_cells = max_rows * width + 1024  # plus the request's other fields
        self.max_uploads, self.max_inflight_bytes = max_uploads, max_inflight_bytes
        self.max_json_bytes = max_json_bytes
        self.uploads, self.inflight_bytes = 0, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if scope["path"].endswith("_file"):
            return await self._upload(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        cost = int(length) if length.isdigit() else self.max_json_bytes
        if self.inflight_bytes and self.inflight_bytes + cost > self.max_inflight_bytes:
            return await _busy(scope, send, f"{self.inflight_bytes} bytes of requests are "
                                            f"being read already (VAE_MAX_INFLIGHT_BYTES)")
        self.inflight_bytes += cost
        try:
            messages, body = await _read(receive)
            if body is not None and (problem := self._too_many(body)) is not None:
                return await refuse(scope, send, 400, problem)
            await self.app(scope, _replay(messages, receive), send)
        finally:
            self.inflight_bytes -= cost

    async def _upload(self, scope, receive, send):
        if self.uploads >= self.max_uploads:
            return await _busy(scope, send, f"{self.uploads} uploads are being scored already "
                                            f"(VAE_MAX_UPLOADS)")
        self.uploads += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.uploads -= 1

    def _too_many(self, body: bytes) -> str | None:
        """Why a JSON body has more rows or cells than any request may, or None: counted on
        the bytes (C speed, no objects built)."""
        rows = max(body.count(b"["), body.count(b"{")) - 2
        if rows > self.max_rows:
            return (f"the body holds about {rows} rows; at most {self.max_rows} are accepted "
                    f"per request (VAE_MAX_ROWS; split it, or use the file endpoint)")
        cells = body.count(b",") + 1
        if cells > self.max_cells:
            return (f"the body holds about {cells} values; at most {self.max_cells} are "
                    f"accepted per request (VAE_MAX_ROWS rows of the model's width)")
        return None


async def _read(receive) -> tuple[list[dict], bytes | None]:
    """The body's messages as received, and the body (None if the client went away)."""
    messages, parts = [], []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(parts)


def _replay(messages: list[dict], receive):
    """A receive() that gives the app the messages already read, then the client's own."""
    pending = list(messages)
    if len(pending) > 1 and pending[-1]["type"] == "http.request":  # one message, one copy
        pending = [{"type": "http.request", "more_body": False,
                    "body": b"".join(m.get("body", b"") for m in pending)}]

    async def replay():
        return pending.pop(0) if pending else await receive()
    return replay


async def _busy(scope, send, why: str) -> None:
    message = f"the service is busy: {why}; retry after a second"
    log_refused(scope["method"], scope["path"], 503, message)
    await send_error(send, 503, message, [(b"retry-after", RETRY_AFTER)])


class Budget:
    """Row-samples of graph work in flight in this worker, at most `total`: a request waits
    until its share is free (each request is at most VAE_MAX_ROW_SAMPLES, under the total)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._changed: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def hold(self, amount: int):
        amount = min(amount, self.total)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + amount <= self.total)
            self.used += amount
        try:
            yield
        finally:
            async with self._changed:
                self.used -= amount
                self._changed.notify_all()
