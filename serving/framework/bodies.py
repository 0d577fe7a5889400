"""Requests as BentoML and uvicorn take them, made to answer client mistakes as client mistakes:
GET on field-less endpoints, unknown fields refused, unreadable bodies and uvicorn's own 400s
in the error shape, file fields that are uploads, and the API page's description."""

from pathlib import Path


JSON_HEADERS = [(b"content-type", b"application/json")]


async def _empty_object():
    return {"type": "http.request", "body": b"{}", "more_body": False}


def read_by_get(scope: dict, receive, paths: tuple[str, ...]):
    """BentoML routes every API as POST; a GET on one of `paths` (field-less endpoints such
    as /metadata) is passed on as a POST of `{}`. Returns the (scope, receive) to use."""
    if scope["method"] == "GET" and scope["path"] in paths:
        scope = {**scope, "method": "POST", "headers": [*scope.get("headers", []), *JSON_HEADERS]}
        return scope, _empty_object
    return scope, receive


def forbid_unknown_fields(service) -> dict[str, list[str]]:
    """BentoML builds each API's input model from its signature and ignores fields it does not
    know, so `{"nsamples": 4}` silently meant the default. Each model is replaced by a subclass
    that refuses extra fields; returns each route's fields for the error message."""
    fields = {}
    for api in service.apis.values():
        spec = api.input_spec
        if getattr(spec, "__root_input__", False):
            continue
        api.input_spec = type(spec.__name__, (spec,), {
            "model_config": {**spec.model_config, "extra": "forbid"},
            "__module__": spec.__module__})
        fields[api.route] = list(spec.model_fields)
    return fields


def describe(service, text: str) -> None:
    """Served from source, BentoML documents a service (the OpenAPI description at /) with a
    badge-filled boilerplate of its own; only a built bento's README replaces it."""
    cls = type(service)
    service.__class__ = type(cls.__name__, (cls,), {"__slots__": (),
                                                    "doc": property(lambda self: text)})


def unreadable_bodies_are_client_errors() -> None:
    """BentoML answers 500 when the body cannot be parsed: Starlette's own 400 for a multipart
    body without a boundary, python-multipart's MultipartParseError for a malformed one. Both
    are the client's: they become BentoML's BadInput, a 400 saying what was wrong. A body
    whose client went away (or that serving.http.errors cut off as too large or too slow) is
    logged by BentoML as an ERROR traceback; it is answered 400 instead, which the middleware
    replaces with its 413 or 408, or which nobody hears."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml.exceptions import BadInput
    from python_multipart.exceptions import MultipartParseError
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse

    original = ServiceAppFactory.api_endpoint
    if getattr(original, "client_errors", False):
        return

    async def api_endpoint(self, name, request):
        try:
            return await original(self, name, request)
        except HTTPException as e:
            if 400 <= e.status_code < 500:
                raise BadInput(f"the body could not be read ({e.detail})") from None
            raise
        except MultipartParseError as e:
            raise BadInput(f"the multipart body could not be read ({e}); expected "
                           f"multipart/form-data as curl -F file=@rows.parquet sends it") from None
        except ClientDisconnect:
            return JSONResponse({"error": "the body was cut off"}, status_code=400)
    api_endpoint.client_errors = True
    ServiceAppFactory.api_endpoint = api_endpoint


def uploads_only() -> None:
    """BentoML takes a text field in place of a file part as a URL and downloads it (an
    outbound request on a client's behalf; here it failed for want of uvloop, a 500), and
    saves an upload under a temporary name ending in the client's whole filename (a
    300-character name failed with ENAMETOOLONG, a 500). A file field must be an uploaded
    part, and its name is kept to its extension."""
    from _bentoml_impl.serde import MultipartSerde
    from bentoml.exceptions import BadInput
    from starlette.datastructures import UploadFile

    if getattr(MultipartSerde.ensure_file, "uploads_only", False):
        return

    async def ensure_file(obj):
        if not isinstance(obj, UploadFile):
            raise BadInput("file is a text field, not an uploaded file; expected a file part "
                           "(curl -F file=@rows.parquet); URLs are not fetched")
        suffix = Path(obj.filename or "").suffix
        obj.filename = "upload" + (suffix if len(suffix) <= 16 else "")
        return obj
    ensure_file.uploads_only = True
    MultipartSerde.ensure_file = staticmethod(ensure_file)


def protocol_errors_as_json() -> None:
    """uvicorn answers a request it cannot parse (`Content-Length: -1`, a bad request line)
    itself, in plain text, before any ASGI middleware sees it: the same 400 is sent as
    `{"error": ...}` like every other client mistake (h11, uvicorn's parser without
    httptools, which this image does not install)."""
    import json

    import h11
    from uvicorn.protocols.http import h11_impl

    if getattr(h11_impl.H11Protocol.send_400_response, "as_json", False):
        return

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": f"the request could not be parsed: {msg}"}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
    send_400_response.as_json = True
    h11_impl.H11Protocol.send_400_response = send_400_response
