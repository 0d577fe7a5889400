"""One error shape for every client mistake: HTTP 4xx with `{"error": "..."}` in one line.

The API calls answer their own client errors (STATUSES, through
serving.framework.bodies.client_errors_answered). `JSONErrorMiddleware` refuses bodies over
the configured size with 413 before they are read, a body that has not arrived in time with
408, and a wrong content type with 415; what Starlette answers in plain text (an unknown path,
a wrong method) is sent in the same shape.
"""

import asyncio
import json
import time

from serving.core.rows import InputError, printable
from serving.framework.bodies import JSON_HEADERS, read_by_get
from serving.framework.logs import log_refused

STATUSES = {InputError: 400}  # each error type raised at its source, and its one status
DOCS = "the API page at / (its OpenAPI schema at /docs.json)"


def _location(loc: list) -> str:
    """('x', 0, 3) -> 'x[0][3]'; BentoML's leading 'body' is dropped."""
    parts = [p for p in loc if p not in ("body", "__root__")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request body"


def validation_message(errors: list[dict], fields: list[str] | None = None) -> str:
    """A pydantic error list in one line; `fields` are the endpoint's request fields, named
    when an unknown one is refused."""
    messages = []
    for error in errors[:3]:
        if error.get("type") == "json_invalid":
            messages.append(f"the body is not valid JSON ({error.get('msg')}); expected a "
                            f"JSON object of the endpoint's fields (see {DOCS})")
        elif error.get("type") == "extra_forbidden":
            known = f"; expected only {', '.join(fields)}" if fields else ""
            messages.append(f"{_location(error.get('loc', []))} is not a field of this "
                            f"endpoint{known}")
        elif error.get("type") == "missing":
            messages.append(f"{_location(error.get('loc', []))} is required")
        else:
            messages.append(f"{_location(error.get('loc', []))}: {error.get('msg')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(messages) + more


def one_line_error(body: bytes, status: int) -> str:
    """The message of a 4xx answer that no API call shaped: Starlette's plain text for an
    unknown path or a wrong method, or a JSON body's `error`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
        if status == 404:
            return f"{text}: no such endpoint; see {DOCS}"
        if status == 405:
            return f"{text}: use POST for the API endpoints (GET for /metadata, /livez, " \
                   f"/readyz, /metrics and /v2)"
        return text
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return str(data)


class BoundedBody:
    """A receive() that stops passing the body on once it exceeds `limit` bytes, or once it
    has taken more than `seconds` to arrive (a trickled body holds a worker's memory and a
    connection; the client is answered 408). Either way the app sees the client go away."""

    def __init__(self, receive, limit: int, seconds: float):
        self.receive, self.limit = receive, limit
        self.deadline = time.monotonic() + seconds
        self.received, self.exceeded, self.timed_out, self.complete = 0, False, False, False

    @property
    def refused(self) -> bool:
        return self.exceeded or self.timed_out

    async def __call__(self):
        if self.complete:  # after the body, receive() only waits for a disconnect
            return await self.receive()
        try:
            message = await asyncio.wait_for(self.receive(),
                                             max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            self.timed_out = True
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                return {"type": "http.disconnect"}
            self.complete = not message.get("more_body", False)
        return message


class ErrorReshaper:
    """A send() that holds back each 4xx answer and sends it as `{"error": "..."}` instead;
    after a refused body it sends nothing (the middleware answers 413 or 408)."""

    def __init__(self, send, body: BoundedBody):
        self.send, self.body = send, body
        self.started = False
        self.held: dict = {}

    async def __call__(self, message):
        if self.body.refused:
            return
        if message["type"] == "http.response.start":
            if 400 <= message["status"] < 500:
                self.held = {"start": message, "body": b""}
                return
            self.started = True
        elif message["type"] == "http.response.body" and self.held:
            self.held["body"] += message.get("body", b"")
            if not message.get("more_body", False):
                start = self.held["start"]
                kept = [(k, v) for k, v in start.get("headers", [])
                        if k.lower() not in (b"content-type", b"content-length")]
                await send_error(self.send, start["status"],
                                 one_line_error(self.held["body"], start["status"]),
                                 kept)
            return
        await self.send(message)


def too_slow(seconds: float) -> str:
    return (f"the body did not arrive within {seconds:g} s; send it whole and at once, or "
            f"raise the service's VAE_BODY_TIMEOUT")


def too_large(size: int | str, limit: int) -> str:
    return (f"the body is {size} bytes; at most {limit} are accepted (split the rows, or "
            f"raise the service's limit)")


def content_type_error(path: str, content_type: str) -> str | None:
    """Why a POST body of this content type cannot be read at path, or None."""
    kind = content_type.split(";")[0].strip().lower()
    if path.endswith("_file"):
        if kind != "multipart/form-data" or "boundary=" not in content_type.lower():
            return (f"the body is {content_type or 'of no content type'}; expected "
                    f"multipart/form-data with a boundary (curl -F file=@rows.parquet)")
        return None
    if kind != "application/json":
        return (f"the body is {content_type or 'of no content type'}; expected JSON with "
                f"the header Content-Type: application/json (curl -H 'content-type: "
                f"application/json' -d '{{...}}')")
    return None


class JSONErrorMiddleware:
    def __init__(self, app, max_json_bytes: int, max_file_bytes: int, body_timeout: float,
                 readable: tuple[str, ...] = (), fields: dict[str, list[str]] | None = None):
        self.app = app
        self.max_json_bytes, self.max_file_bytes = max_json_bytes, max_file_bytes
        self.body_timeout = body_timeout
        self.readable = readable  # field-less POST endpoints that GET may read too
        self.fields = fields or {}  # the request fields of each API route

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope, receive = read_by_get(scope, receive, self.readable)
        path = scope["path"]
        limit = self.max_file_bytes if path.endswith("_file") else self.max_json_bytes
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await refuse(scope, send, 413, too_large(int(length), limit))
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        # a field-less endpoint (/metadata) may be POSTed with no body and no content type
        if scope["method"] == "POST" and path in self.fields and \
                (path not in self.readable or content_type):
            if (problem := content_type_error(path, content_type)) is not None:
                return await refuse(scope, send, 415, problem)
        body = BoundedBody(receive, limit, self.body_timeout)
        answer = ErrorReshaper(send, body)
        await self.app(scope, body, answer)
        if body.exceeded and not answer.started:
            await refuse(scope, send, 413, too_large(f"over {limit}", limit))
        elif body.timed_out and not answer.started:
            await refuse(scope, send, 408, too_slow(self.body_timeout))


async def refuse(scope, send, status: int, message: str) -> None:
    """Answer a request the middleware itself refuses, and log it in one line."""
    log_refused(scope["method"], scope["path"], status, message)
    await send_error(send, status, message)


async def send_error(send, status: int, message: str, headers: list = ()) -> None:
    """An answer `{"error": message}` with the given status, the message made printable."""
    body = json.dumps({"error": printable(message)}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, *JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
