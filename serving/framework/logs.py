"""Logs and metrics: one line per client mistake, a metrics directory per server, unknown paths
under one metric label."""

import logging
import os
from pathlib import Path

from serving.core.rows import printable


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
