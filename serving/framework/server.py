"""The server's life: a header timeout uvicorn lacks under BentoML's workers, BentoML's request
timers cancelled, a stop when the bundle is gone, and probes that answer in JSON."""

import os
import threading
from pathlib import Path


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


def probes_answer_json() -> None:
    """BentoML answers a passing /readyz and /livez with an empty line, which a person or a
    script checking the service reads as nothing: they answer {"status": "ready"} and
    {"status": "alive"} (a failing probe stays BentoML's 503)."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from starlette.responses import JSONResponse

    for name, status in (("readyz", "ready"), ("livez", "alive")):
        original = getattr(ServiceAppFactory, name)
        if getattr(original, "as_json", False):
            continue

        async def probe(self, request, original=original, status=status):
            answer = await original(self, request)
            if answer.status_code != 200:
                return answer
            return JSONResponse({"status": status})
        probe.as_json = True
        setattr(ServiceAppFactory, name, probe)
