"""The Open Inference Protocol (KServe V2 / Triton HTTP), mounted at /v2 beside the service.

Server and model metadata, liveness and readiness, and `infer` with one FP32 input `x`
[B, n_features] (NaN for a missing cell, with a column schema) or, for a model with a column
schema, one input per column named as it: FP32 [B] for a numeric column, BYTES [B] for a
categorical one ("" for a missing cell; an absent column is missing in every row); and the
request parameters `n_samples` and `seed`. An infer request goes
through the service's own checks, noise and merger, so its outputs are bit-identical to
/anomaly_score. Errors follow the protocol: a 4xx with `{"error": "..."}`.
Tensors travel as JSON (`binary_data=False` in tritonclient); the binary extension is refused.
"""

from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.core.rows import InputError

OUTPUTS = {"score": "FP32", "recon_nll": "FP32", "kl": "FP32", "percentile": "FP32",
           "is_anomaly": "BOOL"}
PARAMETERS = ("n_samples", "seed")
# the binary tensor extension's request flag: outputs are answered as JSON all the same
IGNORED_PARAMETERS = ("binary_data_output",)


class ProtocolError(ValueError):
    """A request the protocol or the model refuses; its message is the answer's error."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def service():
    """The VAE instance of this worker (BentoML creates it before serving)."""
    import bentoml
    return bentoml.get_current_service()


def _model(request: Request):
    svc = service()
    name = request.path_params["name"]
    if name != svc.manifest.name:
        raise ProtocolError(f"model {name!r} is not served here; this server serves "
                            f"{svc.manifest.name!r}", 404)
    version = request.path_params.get("version")
    if version is not None and version != svc.version:
        raise ProtocolError(f"model {name!r} has no version {version!r}; this server serves "
                            f"version {svc.version!r}", 404)
    return svc


async def server_metadata(request: Request) -> JSONResponse:
    from importlib.metadata import version
    return JSONResponse({"name": "vae-service", "version": version("vae-service"),
                         "extensions": []})


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"live": True})


async def ready(request: Request) -> JSONResponse:
    service()  # raises before the instance exists
    return JSONResponse({"ready": True})


async def model_ready(request: Request) -> JSONResponse:
    _model(request)
    return JSONResponse({"name": request.path_params["name"], "ready": True})


async def model_metadata(request: Request) -> JSONResponse:
    svc = _model(request)
    manifest = svc.manifest
    schema = svc.runtime.schema
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, manifest.n_features]}]
    if schema is not None and not schema.all_numeric:
        inputs = [{"name": c.name, "datatype": "FP32" if c.kind == "numeric" else "BYTES",
                   "shape": [-1]} for c in schema.columns]
    return JSONResponse({
        "name": manifest.name, "versions": [manifest.version], "platform": "onnxruntime",
        "inputs": inputs,
        "outputs": [{"name": name, "datatype": kind, "shape": [-1]}
                    for name, kind in OUTPUTS.items()]})


def read_infer_request(body: Any, n_features: int, max_samples: int, schema=None
                       ) -> tuple[np.ndarray, int, int | None, str | None, list[str]]:
    """x (B, F), n_samples, seed, the request id and the outputs asked for, from an infer
    request, or a ProtocolError naming what is wrong."""
    if not isinstance(body, dict):
        raise ProtocolError("the body is not a JSON object; expected an inference request "
                            "with 'inputs'")
    unknown = set(body) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise ProtocolError(f"{sorted(unknown)[0]!r} is not a field of an inference request; "
                            f"expected id, parameters, inputs, outputs")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("parameters is not an object")
    for name in parameters:
        if name not in PARAMETERS + IGNORED_PARAMETERS:
            raise ProtocolError(f"parameter {name!r} is not known; expected n_samples, seed")
    n_samples = parameters.get("n_samples", 16)
    seed = parameters.get("seed")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or \
            not 1 <= n_samples <= max_samples:
        raise ProtocolError(f"parameter n_samples is {n_samples!r}; expected a whole number "
                            f"from 1 to {max_samples}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**63):
        raise ProtocolError(f"parameter seed is {seed!r}; expected a whole number from 0 to "
                            f"2**63 - 1")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or \
            not all(isinstance(t, dict) for t in inputs):
        raise ProtocolError("inputs must be a list of tensors: x, or one per column")
    outputs = _outputs(body.get("outputs"))
    if schema is not None and not (len(inputs) == 1 and inputs[0].get("name") == "x"):
        return _columns(inputs, schema), n_samples, seed, body.get("id"), outputs
    if len(inputs) != 1:
        raise ProtocolError("inputs must hold exactly one tensor, x")
    tensor = inputs[0]
    if tensor.get("name") != "x":
        raise ProtocolError(f"input {tensor.get('name')!r} is not known; expected one input "
                            f"named x")
    if tensor.get("datatype") != "FP32":
        raise ProtocolError(f"input x has datatype {tensor.get('datatype')!r}; expected FP32")
    if "parameters" in tensor and (tensor["parameters"] or {}).get("binary_data_size"):
        raise ProtocolError("binary tensor data is not supported; send x as JSON "
                            "(binary_data=False)", 415)
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
        raise ProtocolError(f"input x has shape {shape!r}; expected [rows, {n_features}]")
    data = np.asarray(tensor.get("data"), dtype=object)
    try:
        flat = np.asarray(data.reshape(-1), dtype=np.float64)
    except (TypeError, ValueError):
        raise ProtocolError("input x holds values that are not numbers; expected FP32 "
                            "numbers") from None
    if flat.size != shape[0] * shape[1]:
        raise ProtocolError(f"input x has {flat.size} values; its shape {shape} needs "
                            f"{shape[0] * shape[1]}")
    with np.errstate(over="ignore"):
        x = flat.astype(np.float32).reshape(shape)
    return x, n_samples, seed, body.get("id"), outputs


def _outputs(outputs) -> list[str]:
    names = list(OUTPUTS)
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise ProtocolError("outputs is not a list of {\"name\": ...} objects")
        names = [o.get("name") for o in outputs]
        for name in names:
            if name not in OUTPUTS:
                raise ProtocolError(f"output {name!r} is not known; expected some of "
                                    f"{', '.join(OUTPUTS)}")
    return names


def _columns(inputs: list[dict], schema) -> np.ndarray:
    """The model's matrix from one tensor per column (serving.core.schema's conversion)."""
    import pyarrow as pa

    kinds = {c.name: c.kind for c in schema.columns}
    columns, rows = {}, None
    for tensor in inputs:
        name, kind = tensor.get("name"), tensor.get("datatype")
        if name not in kinds:
            raise ProtocolError(f"input {name!r} is not a column of this model; expected inputs "
                                f"named as its columns (model metadata)")
        expected = "FP32" if kinds[name] == "numeric" else "BYTES"
        if kind != expected:
            raise ProtocolError(f"input {name!r} has datatype {kind!r}; expected {expected}")
        if (tensor.get("parameters") or {}).get("binary_data_size"):
            raise ProtocolError("binary tensor data is not supported; send inputs as JSON "
                                "(binary_data=False)", 415)
        shape, data = tensor.get("shape"), tensor.get("data")
        if not (isinstance(shape, list) and 1 <= len(shape) <= 2 and all(
                isinstance(s, int) and not isinstance(s, bool) for s in shape)
                and (len(shape) == 1 or shape[1] == 1)):
            raise ProtocolError(f"input {name!r} has shape {shape!r}; expected [rows] or "
                                f"[rows, 1]")
        if not isinstance(data, list) or len(data) != shape[0]:
            raise ProtocolError(f"input {name!r} holds {len(data) if isinstance(data, list) else 0}"
                                f" values; its shape {shape} needs {shape[0]}")
        if rows is not None and shape[0] != rows:
            raise ProtocolError(f"input {name!r} has {shape[0]} rows; the other inputs have "
                                f"{rows}")
        rows = shape[0]
        if expected == "BYTES":
            if not all(isinstance(v, str) for v in data):
                raise ProtocolError(f"input {name!r} holds values that are not text; expected "
                                    f"BYTES as JSON strings")
            columns[name] = pa.array([v if v else None for v in data], pa.string())
        else:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
                raise ProtocolError(f"input {name!r} holds values that are not numbers; "
                                    f"expected FP32 numbers (NaN for a missing cell)")
            columns[name] = pa.array(data, pa.float64())
    for name, kind in kinds.items():
        if name not in columns:
            columns[name] = pa.nulls(rows, pa.float64() if kind == "numeric" else pa.string())
    x = schema.from_arrow(pa.table(columns), "the inputs")
    return x


async def infer(request: Request) -> JSONResponse:
    svc = _model(request)
    if "inference-header-content-length" in request.headers:
        raise ProtocolError("binary tensor data is not supported; send x as JSON "
                            "(binary_data=False)", 415)
    try:
        body = await request.json()
    except ValueError as e:
        raise ProtocolError(f"the body is not valid JSON ({e}); expected an inference "
                            f"request") from None
    x, n_samples, seed, request_id, names = read_infer_request(
        body, svc.manifest.n_features, svc.settings.max_samples, svc.runtime.schema)
    seed, scored = await svc.score_request(x, n_samples, seed, "infer")
    answer = {"model_name": svc.manifest.name, "model_version": svc.version,
              "parameters": {"seed": seed, "model_version": svc.version},
              "outputs": [{"name": name, "datatype": OUTPUTS[name], "shape": [len(x)],
                           "data": scored[name].tolist()} for name in names]}
    if request_id is not None:
        answer["id"] = request_id
    return JSONResponse(answer)


async def _protocol_error(request: Request, error: Exception) -> JSONResponse:
    status = error.status if isinstance(error, ProtocolError) else 400
    return JSONResponse({"error": str(error)}, status_code=status)


def _client_errors() -> dict:
    from bentoml.exceptions import InvalidArgument
    return {ProtocolError: _protocol_error, InputError: _protocol_error,
            InvalidArgument: _protocol_error}


app = Starlette(routes=[
    Route("/", server_metadata),
    Route("/health/live", live),
    Route("/health/ready", ready),
    Route("/models/{name}", model_metadata),
    Route("/models/{name}/versions/{version}", model_metadata),
    Route("/models/{name}/ready", model_ready),
    Route("/models/{name}/versions/{version}/ready", model_ready),
    Route("/models/{name}/infer", infer, methods=["POST"]),
    Route("/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
], exception_handlers=_client_errors())
