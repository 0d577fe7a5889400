"""Requests as BentoML and uvicorn take them, made to answer client mistakes as client mistakes:
GET on field-less endpoints, unknown fields refused, typed client errors answered with their
status, unreadable bodies and uvicorn's own 400s in the error shape, file fields that are
uploads, and the API page's description."""

from pathlib import Path

from serving.core.rows import printable
from serving.framework.logs import log_refused


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


def client_errors_answered(statuses: dict[type, int], describe_invalid) -> None:
    """BentoML answers a client's mistake in shapes of its own (a 4xx BentoMLException as a
    one-element list, a pydantic error as a title and a `detail` list, an unreadable body as
    500) and logs each as an ERROR traceback. Here an API call answers them itself, as
    KServe's errors.py does: each error type, raised where the fault is found, maps to one
    status (`statuses`; a 4xx BentoMLException keeps its own), answered `{"error": message}`
    and logged in one line. `describe_invalid(errors, path)` words a pydantic error's list.
    Anything else is the server's fault: BentoML's 500, with its traceback.

    An unparseable body (Starlette's 400 for a multipart body without a boundary,
    python-multipart's MultipartParseError) is the client's too. A body whose client went
    away (or that serving.http.errors cut off as too large or too slow) is answered 400,
    which the middleware replaces with its 413 or 408, or which nobody hears."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from python_multipart.exceptions import MultipartParseError
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse

    original = ServiceAppFactory.api_endpoint
    if getattr(original, "client_errors", False):
        return

    def answer(request, status: int, message: str) -> JSONResponse:
        log_refused(request.method, request.url.path, status, message)
        return JSONResponse({"error": printable(message)}, status_code=status)

    async def api_endpoint(self, name, request):
        try:
            return await original(self, name, request)
        except ValidationError as e:
            errors = e.errors(include_url=False, include_context=False, include_input=False)
            return answer(request, 400, describe_invalid(errors, request.url.path))
        except HTTPException as e:
            if not 400 <= e.status_code < 500:
                raise
            return answer(request, 400, f"the body could not be read ({e.detail})")
        except MultipartParseError as e:
            return answer(request, 400, f"the multipart body could not be read ({e}); expected "
                                        f"multipart/form-data as curl -F file=@rows.parquet "
                                        f"sends it")
        except ClientDisconnect:
            return JSONResponse({"error": "the body was cut off"}, status_code=400)
        except BentoMLException as e:
            if not 400 <= e.error_code.value < 500:
                raise
            return answer(request, e.error_code.value, str(e))
        except tuple(statuses) as e:
            status = next(s for kind, s in statuses.items() if isinstance(e, kind))
            return answer(request, status, str(e))
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
