"""One error shape for every client mistake: HTTP 4xx with `{"error": "..."}` in one line.

BentoML answers a pydantic validation failure with a generic title and a `detail` list, and a
4xx BentoMLException with a one-element list; Starlette answers unknown routes in plain text.
This ASGI middleware rewrites each into `{"error": ...}` naming the field and the fault, and
refuses bodies over the configured size with 413 before they are read.
"""

import json

JSON_HEADERS = [(b"content-type", b"application/json")]


def _location(loc: list) -> str:
    """('x', 0, 3) -> 'x[0][3]'; BentoML's leading 'body' is dropped."""
    parts = [p for p in loc if p not in ("body", "__root__")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request body"


def one_line_error(body: bytes, status: int) -> str:
    """The message of a 4xx answer, whatever shape BentoML or Starlette gave it."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
        if status == 404:
            return f"{text}: no such endpoint; see /docs for the API"
        if status == 405:
            return f"{text}: use POST for the API endpoints (GET for /metadata, /livez, " \
                   f"/readyz and /metrics)"
        return text
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return str(data)
    details = data.get("detail")
    if isinstance(details, list) and details:
        messages = []
        for error in details[:3]:
            if error.get("type") == "json_invalid":
                messages.append(f"the body is not valid JSON ({error.get('msg')}); expected a "
                                f"JSON object of the endpoint's fields (see /docs)")
            elif error.get("type") == "missing":
                messages.append(f"{_location(error.get('loc', []))} is required")
            else:
                messages.append(f"{_location(error.get('loc', []))}: {error.get('msg')}")
        more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
        return "; ".join(messages) + more
    if isinstance(data.get("detail"), str):
        return data["detail"]
    return str(data.get("error", data))


async def _empty_object():
    return {"type": "http.request", "body": b"{}", "more_body": False}


class JSONErrorMiddleware:
    def __init__(self, app, max_json_bytes: int, max_file_bytes: int,
                 readable: tuple[str, ...] = ()):
        self.app = app
        self.max_json_bytes, self.max_file_bytes = max_json_bytes, max_file_bytes
        self.readable = readable  # field-less POST endpoints that GET may read too

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "GET" and scope["path"] in self.readable:
            scope = {**scope, "method": "POST",
                     "headers": [*scope.get("headers", []), *JSON_HEADERS]}
            receive = _empty_object
        limit = self.max_file_bytes if scope["path"].endswith("_file") else self.max_json_bytes
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._send_error(send, 413, f"the body is {int(length)} bytes; at most "
                                          f"{limit} are accepted (split the rows, or raise the "
                                          f"service's limit)")
        received = 0
        too_large = False
        started = False
        held: dict = {}

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def rewriting_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                if too_large:
                    return
                status = message["status"]
                if 400 <= status < 500:
                    held.update(start=message, body=b"")
                    return
                started = True
                return await send(message)
            if message["type"] == "http.response.body":
                if too_large:
                    return
                if held:
                    held["body"] += message.get("body", b"")
                    if not message.get("more_body", False):
                        status = held["start"]["status"]
                        kept = [(k, v) for k, v in held["start"].get("headers", [])
                                if k.lower() not in (b"content-type", b"content-length")]
                        await self._send_error(send, status,
                                               one_line_error(held["body"], status), kept)
                    return
            return await send(message)

        await self.app(scope, limited_receive, rewriting_send)
        if too_large and not started:
            await self._send_error(send, 413, f"the body is over {limit} bytes; at most "
                                   f"{limit} are accepted (split the rows, or raise the "
                                   f"service's limit)")

    @staticmethod
    async def _send_error(send, status: int, message: str, headers: list = ()) -> None:
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, *JSON_HEADERS,
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
