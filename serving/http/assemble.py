"""The service built from its settings: the bundle opened and verified, the class decorated,
the Open Inference Protocol mounted, the middleware added and BentoML adjusted
(serving.framework). `bentoml serve` imports serving/http/app.py, which calls `build` once;
tests call it with their own settings."""

import bentoml

from serving.core.bundle import Bundle, BundleError, load_bundle
from serving.core.runtime import VAERuntime
from serving.framework.bodies import (client_errors_answered, describe, forbid_unknown_fields,
                                      protocol_errors_as_json, uploads_only)
from serving.framework.logs import metrics_directory_per_server, unknown_paths_as_one_metric_label
from serving.framework.server import (exit_when_the_bundle_is_gone, header_timeout,
                                      probes_answer_json, request_timers_cancelled)
from serving.http import oip
from serving.http.errors import STATUSES, JSONErrorMiddleware, validation_message
from serving.http.guard import BodyGuard
from serving.http.service import DESCRIPTION, service_class
from serving.http.settings import Settings
from serving.store import locate_bundle


def open_bundle(settings: Settings) -> Bundle:
    """The bundle to serve, its graphs checked against the manifest (inputs, outputs,
    identity). `bentoml serve` builds the service before it starts workers: a damaged bundle
    stops it here, in one line and with a non-zero exit, not in a crash-loop of workers."""
    try:
        bundle = load_bundle(locate_bundle(settings.model))
        VAERuntime(bundle, 1)
    except BundleError as e:
        raise SystemExit(f"vae-service: cannot serve {settings.model}: {e}") from None
    return bundle


def build(settings: Settings) -> bentoml.Service:
    """The `vae` service for these settings."""
    bundle = open_bundle(settings)
    service = bentoml.service(name="vae", workers=settings.workers,
                              traffic={"timeout": settings.timeout})(
        service_class(settings, bundle))
    service.mount_asgi_app(oip.app, path="/v2", name="open-inference-protocol")
    fields = forbid_unknown_fields(service)  # each API route and its request fields
    service.add_asgi_middleware(JSONErrorMiddleware, max_json_bytes=settings.max_json_bytes,
                                max_file_bytes=settings.max_file_bytes,
                                body_timeout=settings.body_timeout, readable=("/metadata",),
                                fields=fields)
    service.add_asgi_middleware(BodyGuard, max_rows=settings.max_rows,  # after the size checks
                                width=max(bundle.manifest.n_features, bundle.manifest.latent_dim),
                                max_uploads=settings.max_uploads,
                                max_inflight_bytes=settings.max_inflight_bytes,
                                max_json_bytes=settings.max_json_bytes)
    describe(service, DESCRIPTION)
    # process-wide, each applied once whatever the number of builds
    metrics_directory_per_server()  # in `bentoml serve`'s main process, before the workers
    exit_when_the_bundle_is_gone(bundle.path)
    client_errors_answered(STATUSES, lambda errors, path: validation_message(errors,
                                                                             fields.get(path)))
    uploads_only()
    protocol_errors_as_json()
    unknown_paths_as_one_metric_label(list(fields))
    header_timeout(settings.header_timeout)
    request_timers_cancelled()
    probes_answer_json()
    return service
