"""Logs and metrics: one line per client mistake, a metrics directory per server, unknown paths
under one metric label."""

import logging
import os
from pathlib import Path

from serving.core.rows import printable


LOG = logging.getLogger("bentoml.vae")  # under BentoML's logger, so its handlers write it


def log_refused(method: str, path: str, status: int, message: str) -> None:
    """A refused request (a client mistake, or 503 busy) as one INFO line,
    `POST /path -> 400: message`, never a traceback (BentoML logs every exception of an API as
    an ERROR with its traceback: fuzzing wrote 100 MB of log in minutes)."""
    LOG.info("%s %s -> %d: %s", method, path, status, printable(message))


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
