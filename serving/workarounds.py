"""Where BentoML 1.4 does not do what this service needs, and what we do instead.

Every place the code works around BentoML is here, with the upstream reference, so that a
BentoML upgrade means reading this one file. Of ours, it imports only serving.core.

- A bento's container has no model store: `packaged_model` finds the models it carries.
- GET on a field-less POST endpoint (/metadata): `read_by_get` rewrites the request.
- Unknown request fields are ignored: `forbid_unknown_fields`.
- Every client mistake is logged as an ERROR traceback: `OneLineClientErrors`.
- Two servers on one BENTOML_HOME share (and wipe) one metrics directory:
  `metrics_directory_per_server`.
- A service served from source is described by BentoML's boilerplate: `describe`.
- An unparseable (multipart) body is answered 500: `unreadable_bodies_are_client_errors`.
- Every unknown path becomes series of its own in /metrics: `unknown_paths_as_one_metric_label`.
- uvicorn (under BentoML's workers) closes idle connections only after a response: one that
  never completes its headers stays open for ever: `header_timeout`.
- BentoML's request timeout leaves a timer behind every request, holding its context for the
  whole timeout: `request_timers_cancelled`.
- #5540 (the client to a dependency service closes its session every 100 requests) and #4971
  (its keep-alive outlives the server's) no longer touch us: the service has no dependency
  since the model runs in the API process (serving/http/service.py). Reintroduce a
  `bentoml.depends` and both come back.
"""

import logging
import os
import threading
from pathlib import Path

from serving.core.rows import printable

JSON_HEADERS = [(b"content-type", b"application/json")]


def packaged_model(ref: str, manifest: str = "manifest.json") -> Path | None:
    """Inside a bento's container (BENTO_PATH set) its models sit in $BENTO_PATH/models/NAME/
    VERSION, with NAME/latest naming the newest, and `bentoml.models.get` does not look there:
    found there, a batch job in the image needs no model store."""
    root = os.environ.get("BENTO_PATH")
    if not root:
        return None
    name, _, version = ref.partition(":")
    models = Path(root) / "models" / name
    if version in ("", "latest") and (models / "latest").is_file():
        version = (models / "latest").read_text().strip()
    path = models / version if version else None
    return path if path is not None and (path / manifest).is_file() else None


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


class OneLineClientErrors(logging.Filter):
    """BentoML logs every exception of an API, a client's 4xx included, as an ERROR with its
    traceback (`log_exception`): fuzzing wrote 100 MB of log in minutes. A client mistake
    becomes one INFO line, `POST /path -> 400: message`; server faults keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = _client_status(error)
        if status is None:
            return True
        path, method = (record.args + (None, None))[:2] if isinstance(record.args, tuple) \
            else (None, None)
        message = printable(_first_error(error))
        record.msg, record.args = "%s %s -> %d: %s", (method, path, status, message)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _client_status(error: BaseException | None) -> int | None:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException) and 400 <= error.error_code.value < 500:
        return error.error_code.value
    return None


def _first_error(error: BaseException) -> str:
    from pydantic import ValidationError
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return f"{where}: {first['msg']}"
    return str(error)


def quiet_client_errors() -> None:
    """Install OneLineClientErrors on BentoML's API-error logger (once)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, OneLineClientErrors) for f in logger.filters):
        logger.addFilter(OneLineClientErrors())


def metrics_directory_per_server() -> None:
    """`bentoml serve` keeps its Prometheus multiprocess files in $BENTOML_HOME/
    prometheus_multiproc_dir and empties that directory when it starts, so a second server on
    the same home wiped the first's counters. Each server (by the pid of its main process) gets
    a directory of its own beside it, `prometheus_multiproc_dir-PID`, which no other server
    empties; those of servers no longer running are removed."""
    import shutil

    import bentoml.serving

    original = bentoml.serving.ensure_prometheus_dir
    if getattr(original, "per_server", False):
        return

    def per_server(directory: str | None = None, **kwargs) -> str:
        from bentoml._internal.configuration.containers import BentoMLContainer
        shared = Path(directory or BentoMLContainer.prometheus_multiproc_dir.get())
        for old in shared.parent.glob(f"{shared.name}-*"):
            pid = old.name.rsplit("-", 1)[1]
            if not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(old, ignore_errors=True)
        return original(str(shared.parent / f"{shared.name}-{os.getpid()}"), **kwargs)
    per_server.per_server = True
    bentoml.serving.ensure_prometheus_dir = per_server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return pid > 0


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


def exit_when_the_bundle_is_gone(bundle: Path, every: float = 2.0) -> None:
    """`bentoml serve`'s main process outlives its workers: with the bundle deleted, a worker
    that died could not be restarted (it exits at import), and the server stayed up with no
    worker while clients hung. The main process watches the bundle and, once its manifest is
    gone, stops itself in one line, so that Kubernetes restarts the pod."""
    import _bentoml_impl.server as server

    original = server.serve_http
    if getattr(original, "watched", False):
        return

    def serve_http(*args, **kwargs):
        threading.Thread(target=_watch, args=(bundle, every), daemon=True,
                         name="bundle-watch").start()
        return original(*args, **kwargs)
    serve_http.watched = True
    server.serve_http = serve_http


def _watch(bundle: Path, every: float) -> None:
    import signal
    import sys
    import time

    while (bundle / "manifest.json").is_file():
        time.sleep(every)
    print(f"vae-service: the bundle {bundle} is gone; stopping the server (its workers could "
          f"not be restarted without it)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    os._exit(1)


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


UNKNOWN_PATH = "/__unknown__"
INFRA_PREFIXES = ("/static_content/", "/assets/", "/v2")  # BentoML's docs page, the protocol
INFRA_PATHS = ("/", "/docs.json", "/schema.json", "/livez", "/readyz", "/healthz", "/metrics")


def unknown_paths_as_one_metric_label(api_routes: list[str]) -> None:
    """BentoML's HTTP metrics carry the request's raw path as a label: every unknown path a
    scanner tries adds about 20 series (3,300 of them made /metrics 12 MB). A path that is
    not one of the service's is passed on as one path, /__unknown__, which is a 404 all the
    same."""
    from bentoml._internal.server.http import instruments

    for middleware in (instruments.HTTPTrafficMetricsMiddleware,
                       instruments.RunnerTrafficMetricsMiddleware):
        original = middleware.__call__
        known = getattr(original, "known_paths", None)
        if known is not None:
            known.update(api_routes)
            continue
        middleware.__call__ = _one_label_for_unknown_paths(original,
                                                           set(INFRA_PATHS) | set(api_routes))


def _one_label_for_unknown_paths(original, known: set[str]):
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in known and \
                not scope["path"].startswith(INFRA_PREFIXES):
            scope = {**scope, "path": UNKNOWN_PATH, "raw_path": UNKNOWN_PATH.encode()}
        return await original(self, scope, receive, send)
    __call__.known_paths = known
    return __call__


def header_timeout(seconds: float) -> None:
    """uvicorn times out a keep-alive connection that sits idle after a response, but not one
    that sends nothing or trickles its headers (a slowloris holds a connection for ever; 500
    such connections stayed open for 90–156 s and more). Each connection gets a watch: if a
    new request's headers have not arrived `seconds` after the connection opened or after the
    last response, it is closed. BentoML builds uvicorn's Config itself, so the protocols are
    patched (in the worker process, before it accepts connections)."""
    import importlib

    for module, name in (("h11_impl", "H11Protocol"), ("httptools_impl", "HttpToolsProtocol")):
        try:  # uvicorn uses httptools when it is installed, else h11
            protocol = getattr(importlib.import_module(f"uvicorn.protocols.http.{module}"), name)
        except ImportError:
            continue
        original = protocol.connection_made
        if getattr(original, "header_timeout", None) is not None:
            original.header_timeout[0] = seconds
            continue
        protocol.connection_made = _watched(original, [seconds])


def _watched(connection_made, timeout: list[float]):
    def watch(protocol, last_cycle) -> None:
        transport = protocol.transport
        if transport is None or transport.is_closing():
            return
        cycle = protocol.cycle
        waiting = cycle is None or cycle.response_complete  # no request under way
        if waiting and cycle is last_cycle:  # and none began since the last look
            transport.close()
            return
        protocol.loop.call_later(timeout[0], watch, protocol, cycle)

    def patched(self, transport) -> None:
        connection_made(self, transport)
        self.loop.call_later(timeout[0], watch, self, self.cycle)
    patched.header_timeout = timeout
    return patched


def request_timers_cancelled() -> None:
    """BentoML's TimeoutMiddleware (traffic.timeout, VAE_TIMEOUT) schedules a timer for every
    request and never cancels it. Each timer keeps the request's context (its trace span, its
    ASGI scope, its future) alive for the full 120 s: at 750 one-row requests a second that
    was some 90,000 timers and 600 MB more in the worker before it levelled off, and the
    garbage collector walked all of it. The same middleware, with the timer cancelled once
    the request is done."""
    import asyncio

    from bentoml._internal.server.http import traffic
    from starlette.responses import JSONResponse

    middleware = traffic.TimeoutMiddleware
    if getattr(middleware.__call__, "cancels_its_timer", False):
        return

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except asyncio.TimeoutError:
            if task.cancel():
                await JSONResponse({"error": f"Not able to process the request in "
                                             f"{self.timeout} seconds"},
                                   status_code=504)(scope, receive, send)
        else:
            await task
        finally:
            timer.cancel()
    __call__.cancels_its_timer = True
    middleware.__call__ = __call__
