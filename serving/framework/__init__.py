"""Where BentoML 1.4 does not do what this service needs, and what we do instead.

Every place the code changes how BentoML (or uvicorn under it) behaves is in this package,
with the upstream reference, so that a BentoML upgrade means reading these four files:
bento.py, bodies.py, logs.py, server.py. Of ours, it imports only serving.core.

- A bento's container has no model store: `packaged_model` finds the models it carries.
- GET on a field-less POST endpoint (/metadata): `read_by_get` rewrites the request.
- Unknown request fields are ignored: `forbid_unknown_fields`.
- A client mistake is answered in BentoML's shapes (a list, a `detail` list, a 500 for an
  unreadable body) and logged as an ERROR traceback: `client_errors_answered`.
- Two servers on one BENTOML_HOME share (and wipe) one metrics directory:
  `metrics_directory_per_server`.
- A service served from source is described by BentoML's boilerplate: `describe`.
- Every unknown path becomes series of its own in /metrics: `unknown_paths_as_one_metric_label`.
- uvicorn (under BentoML's workers) closes idle connections only after a response: one that
  never completes its headers stays open for ever: `header_timeout`.
- BentoML's request timeout leaves a timer behind every request, holding its context for the
  whole timeout: `request_timers_cancelled`.
- A text `file` field is fetched as a URL, and an upload's name becomes a temporary file's:
  `uploads_only`.
- uvicorn answers a request it cannot parse in plain text: `protocol_errors_as_json`.
- A passing /readyz or /livez answers an empty line: `probes_answer_json`.
- The main process outlives workers that cannot restart without the bundle:
  `exit_when_the_bundle_is_gone`.
- #5540 (the client to a dependency service closes its session every 100 requests) and #4971
  (its keep-alive outlives the server's) no longer touch us: the service has no dependency
  since the model runs in the API process (serving/http/service.py). Reintroduce a
  `bentoml.depends` and both come back.
"""
