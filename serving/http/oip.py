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

from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.core.noise import DEFAULT_SAMPLES, MAX_SEED
from serving.core.rows import InputError, printable
from serving.framework.logs import log_refused

OUTPUTS = {"score": "FP32", "recon_nll": "FP32", "kl": "FP32", "percentile": "FP32",
           "is_anomaly": "BOOL", "observed": "INT32"}
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


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TensorIn(_Closed):
    """An input tensor of the protocol's JSON form (binary data is refused)."""
    name: str = Field(max_length=1000)
    datatype: str = Field(max_length=20)
    shape: list[Annotated[int, Field(ge=0, le=2**31)]] = Field(max_length=4)
    data: list
    parameters: dict[str, Any] | None = None


class TensorOut(_Closed):
    name: str = Field(max_length=1000)
    parameters: dict[str, Any] | None = None


class InferRequest(_Closed):
    id: str | None = Field(None, max_length=1000)
    parameters: dict[str, Any] | None = None
    inputs: list[TensorIn] = Field(min_length=1, max_length=1000)
    outputs: list[TensorOut] | None = Field(None, max_length=len(OUTPUTS))


def _parsed(body: Any) -> InferRequest:
    if not isinstance(body, dict):
        raise ProtocolError("the body is not a JSON object; expected an inference request "
                            "with 'inputs'")
    try:
        return InferRequest.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the request"
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
            raise ProtocolError(f"{first['loc'][0]!r} is not a field of an inference request; "
                                f"expected id, parameters, inputs, outputs") from None
        raise ProtocolError(f"{where}: {first['msg']}") from None


def _flat_numbers(data: list, name: str) -> np.ndarray:
    """A tensor's data, flat or nested one level (a list of rows), as float64; booleans,
    text, deeper nesting and integers beyond float range are refused."""
    flat = []
    for value in data:
        for cell in value if isinstance(value, list) else [value]:
            if isinstance(cell, bool) or not isinstance(cell, (int, float)):
                raise ProtocolError(f"input {name} holds {type(cell).__name__} values; "
                                    f"expected FP32 numbers")
            flat.append(cell)
    try:
        return np.asarray(flat, dtype=np.float64)
    except OverflowError:
        raise ProtocolError(f"input {name} holds an integer beyond FP32's range; expected "
                            f"FP32 numbers") from None


def read_infer_request(body: Any, n_features: int, max_samples: int, schema=None
                       ) -> tuple[np.ndarray, int, int | None, str | None, list[str]]:
    """x (B, F), n_samples, seed, the request id and the outputs asked for, from an infer
    request, or a ProtocolError naming what is wrong."""
    request = _parsed(body)
    parameters = request.parameters or {}
    for name in parameters:
        if name not in PARAMETERS + IGNORED_PARAMETERS:
            raise ProtocolError(f"parameter {name!r} is not known; expected n_samples, seed")
    n_samples = parameters.get("n_samples", DEFAULT_SAMPLES)
    seed = parameters.get("seed")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or \
            not 1 <= n_samples <= max_samples:
        raise ProtocolError(f"parameter n_samples is {str(n_samples)[:40]}; expected a whole "
                            f"number from 1 to {max_samples}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= MAX_SEED):
        raise ProtocolError(f"parameter seed is {str(seed)[:40]}; expected a whole number from "
                            f"0 to 2**63 - 1")
    outputs = _outputs(request.outputs)
    inputs = request.inputs
    if schema is not None and not (len(inputs) == 1 and inputs[0].name == "x"):
        return _columns(inputs, schema), n_samples, seed, request.id, outputs
    if len(inputs) != 1:
        raise ProtocolError("inputs must hold exactly one tensor, x")
    tensor = inputs[0]
    if tensor.name != "x":
        raise ProtocolError(f"input {tensor.name[:80]!r} is not known; expected one input "
                            f"named x")
    if tensor.datatype != "FP32":
        raise ProtocolError(f"input x has datatype {tensor.datatype!r}; expected FP32")
    if (tensor.parameters or {}).get("binary_data_size"):
        raise ProtocolError("binary tensor data is not supported; send x as JSON "
                            "(binary_data=False)", 415)
    shape = tensor.shape
    if len(shape) != 2:
        raise ProtocolError(f"input x has shape {shape!r}; expected [rows, {n_features}]")
    flat = _flat_numbers(tensor.data, "x")
    if flat.size != shape[0] * shape[1]:
        raise ProtocolError(f"input x has {flat.size} values; its shape {shape} needs "
                            f"{shape[0] * shape[1]}")
    with np.errstate(over="ignore"):
        x = flat.astype(np.float32).reshape(shape)
    return x, n_samples, seed, request.id, outputs


def _outputs(outputs: list[TensorOut] | None) -> list[str]:
    names = list(OUTPUTS)
    if outputs is not None:
        names = [o.name for o in outputs]
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
        name, kind = tensor.name, tensor.datatype
        if name not in kinds:
            raise ProtocolError(f"input {name!r} is not a column of this model; expected inputs "
                                f"named as its columns (model metadata)")
        expected = "FP32" if kinds[name] == "numeric" else "BYTES"
        if kind != expected:
            raise ProtocolError(f"input {name!r} has datatype {kind!r}; expected {expected}")
        if (tensor.parameters or {}).get("binary_data_size"):
            raise ProtocolError("binary tensor data is not supported; send inputs as JSON "
                                "(binary_data=False)", 415)
        shape, data = tensor.shape, tensor.data
        if not (1 <= len(shape) <= 2 and (len(shape) == 1 or shape[1] == 1)):
            raise ProtocolError(f"input {name!r} has shape {shape!r}; expected [rows] or "
                                f"[rows, 1]")
        if len(data) != shape[0]:
            raise ProtocolError(f"input {name!r} holds {len(data)} values; its shape {shape} "
                                f"needs {shape[0]}")
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
            columns[name] = pa.array(_flat_numbers(data, repr(name)), pa.float64())
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
    except RecursionError:
        raise ProtocolError("the body is nested too deeply; expected an inference request")
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
    log_refused(request.method, request.url.path, status, str(error))
    return JSONResponse({"error": printable(str(error))}, status_code=status)


def _client_errors() -> dict:
    return {ProtocolError: _protocol_error, InputError: _protocol_error}


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
