"""The HTTP service: direct calls, every client error through the ASGI app, and a real
`bentoml serve` process driven by bentoml.SyncHTTPClient."""

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.http.service import DESCRIPTION


def run(coroutine):
    return asyncio.run(coroutine)


# -- direct calls ---------------------------------------------------------------------------

def test_direct_calls_match_the_runtime(service, runtime, digits_x):
    x = digits_x[:20]
    answer = run(service.anomaly_score(x.tolist(), n_samples=16, seed=7, explain=True))
    expected = runtime.score(x, runtime.noise(7, 16), explain=True)
    assert answer.score == expected.score.tolist()
    assert answer.percentile == expected.percentile.tolist()
    assert answer.is_anomaly == expected.is_anomaly.tolist()
    assert answer.feature_nll == expected.feature_nll.tolist()
    assert answer.seed == 7 and answer.model_version == runtime.version

    encoded = run(service.encode(x.tolist(), n_samples=3, seed=1))
    mu, logvar, z = runtime.graphs.encode(x, runtime.noise(1, 3, 0).rows(0, 20))
    assert encoded.mu == mu.tolist() and encoded.z == z.tolist()
    assert run(service.encode(x.tolist())).z is None

    decoded = run(service.decode(mu.tolist()))
    assert decoded.x_mean == runtime.graphs.decode(mu)[0].tolist()

    sampled = run(service.sample(n=5, seed=3, temperature=0.5))
    x_s, z_s = runtime.sample(5, seed=3, temperature=0.5)
    assert sampled.x == x_s.tolist() and sampled.z == z_s.tolist()

    for k in (0, 4):
        rebuilt = run(service.reconstruct(x.tolist(), n_samples=k, seed=2))
        np.testing.assert_array_equal(np.float32(rebuilt.x_mean),
                                      runtime.reconstruct(x, k, seed=2)[0])

    meta = service.metadata()
    assert meta["version"] == runtime.version and "quantiles" not in meta["calibration"]


def test_a_seedless_answer_replays_from_its_seed(service, digits_x):
    x = digits_x[:5].tolist()
    first = run(service.anomaly_score(x))
    again = run(service.anomaly_score(x, seed=first.seed))
    assert first.score == again.score
    other = run(service.anomaly_score(x))
    assert other.seed != first.seed and other.score != first.score


# -- every client mistake through the ASGI app ------------------------------------------------

@pytest.fixture(scope="module")
def http(vae_service):
    from starlette.testclient import TestClient

    with TestClient(vae_service.to_asgi()) as client:
        yield client


GOOD = {"x": [[1.0] * 64], "n_samples": 2, "seed": 1}
ROW = [1.0] * 64

BAD_REQUESTS = [
    ("/anomaly_score", {"x": [[1.0] * 63]}, 400,
     "x has 63 columns; this model expects 64 (feature_names in /metadata)"),
    ("/anomaly_score", {"x": [ROW, [1.0] * 65]}, 400, "x[1] has 65 values; this model expects 64"),
    ("/anomaly_score", {"x": [ROW, [None] * 64]}, 400,
     "x[1] has no observed cell; expected at least one value per row"),
    ("/anomaly_score", '{"x": [[1' + ", 1" * 62 + ", Infinity]]}", 400,
     "x[0][63] is infinite (or beyond float32's range); expected finite numbers or null"),
    ("/anomaly_score", {"x": [[1e39] * 64]}, 400, "x[0][0] is infinite (or beyond float32's"),
    ("/anomaly_score", {"x": [ROW[:-1] + ["7"]]}, 400, "x[0][63]: Input should be a valid number"),
    ("/anomaly_score", {"x": [[True] * 64]}, 400, "x[0][0]: Input should be a valid number"),
    ("/anomaly_score", {"x": "rows"}, 400, "x: Input should be a valid array"),
    ("/anomaly_score", {"x": []}, 400, "x is empty; expected at least one row of 64 numbers"),
    ("/anomaly_score", {}, 400, "give either x (rows of numbers) or records (objects keyed by"),
    ("/anomaly_score", {"x": [ROW] * 501}, 400,
     "x has 501 rows; at most 500 are accepted per request"),
    ("/anomaly_score", {"x": [ROW], "n_samples": 1025}, 400,
     "n_samples: Input should be less than or equal to 1024"),
    ("/anomaly_score", {"x": [ROW], "n_samples": 0}, 400,
     "n_samples: Input should be greater than or equal to 1"),
    ("/anomaly_score", {"x": [ROW], "n_samples": "4"}, 400, "n_samples: Input should be a valid"),
    ("/anomaly_score", {"x": [ROW], "seed": -1}, 400, "seed: Input should be greater than or"),
    ("/anomaly_score", {"x": [ROW], "explain": "maybe"}, 400, "explain: Input should be a valid"),
    ("/anomaly_score", {"x": [ROW], "explain": "yes"}, 400, "explain: Input should be a valid"),
    ("/anomaly_score", {"x": [ROW], "explain": 1}, 400, "explain: Input should be a valid"),
    ("/decode", {"z": [[3e38] * 4]}, 400, "z[0][0] is 3e+38; expected codes within ±10000"),
    ("/anomaly_score", '{"x": [[1, 2', 400, "the body is not valid JSON"),
    ("/encode", {"x": [ROW], "n_samples": 2000}, 400, "n_samples: Input should be less than"),
    ("/reconstruct", {"x": [[0.5]]}, 400, "x has 1 columns; this model expects 64"),
    ("/decode", {"z": [[0.0] * 3]}, 400,
     "z has 3 columns; this model expects 4 (latent_dim in /metadata)"),
    ("/anomaly_score", {"x": [ROW], "nsamples": 4}, 400,
     "nsamples is not a field of this endpoint; expected only x, n_samples, seed, explain"),
    ("/sample", {"n": 2, "temp": 0.5}, 400,
     "temp is not a field of this endpoint; expected only n, seed, temperature"),
    ("/sample", {"n": 301}, 400, "n: Input should be less than or equal to 300"),
    ("/sample", {"n": 0}, 400, "n: Input should be greater than or equal to 1"),
    ("/anomaly_score", {"records": []}, 400, "records is empty; expected at least one object"),
    ("/anomaly_score", {"records": [{"pixel_0": "a"}]}, 400, "records[0]"),
    ("/sample", {"n": 2, "temperature": -1}, 400, "temperature: Input should be greater than"),
    ("/anomaly_score", {"x": [ROW] * 500, "n_samples": 17}, 400,
     "500 rows × n_samples 17 is 8500 row-samples; at most 8192 are accepted per request"),
    ("/encode", {"x": [ROW] * 10, "n_samples": 1000}, 400, "10000 row-samples; at most 8192"),
    ("/reconstruct", {"x": [ROW] * 10, "n_samples": 1000}, 400, "10000 row-samples; at most"),
    ("/nowhere", {}, 404, "Not Found: no such endpoint; see the API page at / (its OpenAPI "
                          "schema at /docs.json)"),
]


@pytest.mark.parametrize("path,body,status,message", BAD_REQUESTS,
                         ids=[f"{b[0]}:{b[3][:30]}" for b in BAD_REQUESTS])
def test_client_mistakes_get_4xx_with_a_one_line_error(http, path, body, status, message):
    content = body if isinstance(body, str) else json.dumps(body)
    response = http.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert list(error) == ["error"] and message in error["error"]
    assert "\n" not in error["error"]
    good = http.post("/anomaly_score", json=GOOD)  # and the next request is unharmed
    assert good.status_code == 200 and len(good.json()["score"]) == 1


@pytest.mark.parametrize("path,content_type,message", [
    ("/anomaly_score", "application/x-www-form-urlencoded",
     "the body is application/x-www-form-urlencoded; expected JSON with the header "
     "Content-Type: application/json"),
    ("/encode", "", "the body is of no content type; expected JSON"),
    ("/sample", "text/plain", "the body is text/plain; expected JSON"),
    ("/anomaly_score", "multipart/form-data", "expected JSON"),
    ("/anomaly_score_file", "multipart/form-data",
     "the body is multipart/form-data; expected multipart/form-data with a boundary"),
    ("/anomaly_score_file", "application/json", "expected multipart/form-data with a boundary"),
])
def test_a_body_of_the_wrong_kind_is_named(http, path, content_type, message):
    """curl's -d sends a form unless told otherwise: the answer says the body must be JSON."""
    headers = {"content-type": content_type} if content_type else {}
    response = http.post(path, content=b"x=1", headers=headers)
    assert response.status_code == 415 and message in response.json()["error"], response.text
    assert http.post("/anomaly_score", json=GOOD).status_code == 200


def test_the_docs_the_errors_point_to_exist(http):
    assert http.get("/").status_code == 200  # the OpenAPI page
    spec = http.get("/docs.json").json()
    assert spec["info"]["description"] == DESCRIPTION
    for path in ("/anomaly_score", "/encode", "/decode", "/sample", "/reconstruct"):
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        properties = schema["schema"]["properties"]
        assert all("examples" in field for field in properties.values()), (path, properties)


def test_oversized_bodies_get_413(http):
    body = json.dumps({"x": [[123456.789] * 64] * 4000})  # 3 MB, over VAE_MAX_JSON_BYTES
    response = http.post("/anomaly_score", content=body,
                         headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "at most 2000000 are accepted" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b" " * 200_000
    response = http.post("/anomaly_score", content=chunks(),
                         headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert http.post("/anomaly_score", json=GOOD).status_code == 200


def test_metadata_and_probes(http, runtime):
    assert http.get("/metadata").json()["version"] == runtime.version
    assert http.post("/metadata").json()["n_features"] == 64
    assert http.get("/livez").json() == {"status": "alive"}  # issue 28: not an empty body
    assert http.get("/readyz").json() == {"status": "ready"}
    response = http.put("/anomaly_score")
    assert response.status_code == 405 and "use POST" in response.json()["error"]


def write_file(path: Path, x: np.ndarray, names: list[str]) -> Path:
    if path.suffix == ".npy":
        np.save(path, x)
    elif path.suffix == ".parquet":
        pq.write_table(pa.table({n: x[:, i] for i, n in enumerate(names)}), path)
    else:
        path.write_text(",".join(names) + "\n" + "\n".join(",".join(map(repr, map(float, r)))
                                                         for r in x))
    return path


def read_scores(content: bytes, suffix: str) -> dict:
    if suffix == ".npy":
        records = np.load(io.BytesIO(content))
        return {name: records[name] for name in records.dtype.names}
    if suffix == ".parquet":
        table = pq.read_table(io.BytesIO(content))
    else:
        from pyarrow import csv
        table = csv.read_csv(io.BytesIO(content))
    return {name: table[name].to_numpy() for name in table.column_names}


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_file_endpoint_gives_the_same_format_and_answers(http, runtime, digits_x, tmp_path,
                                                         suffix):
    names = runtime.manifest.feature_names
    x = digits_x[:300]
    # columns named in another order, plus an extra one, are matched by name
    order = list(reversed(range(64)))
    if suffix == ".npy":
        path = write_file(tmp_path / f"rows{suffix}", x, names)
    else:
        shuffled = np.column_stack([x[:, order], np.arange(300)])
        path = write_file(tmp_path / f"rows{suffix}", shuffled, [names[i] for i in order] + ["id"])
    with open(path, "rb") as f:
        response = http.post("/anomaly_score_file", files={"file": (path.name, f)},
                             data={"n_samples": "8", "seed": "5"})
    assert response.status_code == 200, response.text
    assert response.headers["x-vae-seed"] == "5"
    scores = read_scores(response.content, suffix)
    expected = runtime.score(x, runtime.noise(5, 8))
    assert list(scores) == ["row", "score", "recon_nll", "kl", "percentile", "is_anomaly",
                            "observed"]
    np.testing.assert_array_equal(scores["row"], np.arange(300))
    tolerance = 1e-6 if suffix == ".csv" else 0  # CSV writes decimal text
    np.testing.assert_allclose(scores["score"], expected.score, rtol=tolerance)
    np.testing.assert_array_equal(scores["is_anomaly"], expected.is_anomaly)


@pytest.mark.parametrize("name,content,message", [
    ("rows.json", b"{}", "the uploaded file has extension '.json'; expected one of"),
    ("rows.csv", b"a,b\n1,2\n", "the uploaded file lacks 64 of the model's 64 feature columns"),
    ("rows.csv", b"", "the uploaded file is empty"),
    ("rows.csv", ",".join(f"pixel_{i // 8}_{i % 8}" for i in range(64)).encode() + b"\n",
     "the uploaded file has no rows"),
    ("rows.npy", b"garbage", "the uploaded file is not a readable .npy array"),
])
def test_bad_uploads_get_400(http, name, content, message):
    response = http.post("/anomaly_score_file", files={"file": (name, content)})
    assert response.status_code == 400 and message in response.json()["error"]
    assert http.post("/anomaly_score", json=GOOD).status_code == 200


def test_an_upload_over_the_row_limit_is_refused(http, runtime, tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.zeros((1001, 64), np.float32))
    response = http.post("/anomaly_score_file", files={"file": (path.name, path.read_bytes())},
                         data={"n_samples": "1"})
    assert response.status_code == 400  # the .npy header says it: refused before scoring
    assert "the uploaded file has 1001 rows; at most 1000" in response.json()["error"]
    zeros = pa.array(np.zeros(50_000, np.float32))  # issue 28: a small Parquet of many rows
    pq.write_table(pa.table({name: zeros for name in runtime.manifest.feature_names}),
                   tmp_path / "many.parquet")
    response = http.post("/anomaly_score_file", data={"n_samples": "1"}, files={
        "file": ("many.parquet", (tmp_path / "many.parquet").read_bytes())})
    assert response.status_code == 400  # its footer says 50,000 rows
    assert "the uploaded file has 50000 rows; at most 1000" in response.json()["error"]
    np.save(path, np.zeros((1000, 64), np.float32))  # at the limit, in chunks of 8192 // 64
    response = http.post("/anomaly_score_file", files={"file": (path.name, path.read_bytes())},
                         data={"n_samples": "64", "seed": "2"})
    assert response.status_code == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(response.content))["score"],
                                  runtime.score(np.zeros((1000, 64), np.float32),
                                                runtime.noise(2, 64)).score)


def test_bad_upload_width(http, tmp_path):
    path = tmp_path / "narrow.npy"
    np.save(path, np.zeros((3, 10), np.float32))
    response = http.post("/anomaly_score_file", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 400
    assert "the uploaded file has 10 columns; this model expects 64" in response.json()["error"]


def test_a_huge_finite_cell_is_an_anomaly_with_a_number(http):
    """1e19 overflows the float32 maths; the answer is still a number, flagged."""
    row = [1.0] * 64
    row[5] = 3e38
    answer = http.post("/anomaly_score", json={"x": [row, [1.0] * 64], "seed": 1}).json()
    assert all(isinstance(v, float) for v in answer["score"] + answer["percentile"])
    assert answer["is_anomaly"][0] is True and answer["percentile"][0] == 100.0


def test_a_malformed_multipart_body_is_a_400(http):
    response = http.post("/anomaly_score_file", content=b"--b\r\n[]--b--\r\n",
                         headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400
    assert "body could not be read" in response.json()["error"]
    assert http.post("/anomaly_score", json=GOOD).status_code == 200


def test_binary_input_is_not_echoed_in_the_error(http):
    """A .npy file named .csv: the message quotes no raw bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 64), np.float32))
    response = http.post("/anomaly_score_file", files={"file": ("rows.csv", buffer.getvalue())})
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.isprintable() and len(message) <= 400 and "\x93NUMPY" not in message


def test_a_huge_cell_gives_numbers_in_explain_not_null(http):
    """Issue 24 #7: a feature_nll that overflows saturates like the score: never null."""
    row = [1.0] * 64
    row[5] = 3e38
    answer = http.post("/anomaly_score", json={"x": [row], "explain": True, "seed": 1}).json()
    nll = answer["feature_nll"][0]
    assert None not in nll and all(np.isfinite(nll))


INFER = "/v2/models/vae/infer"
TENSOR = {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": ROW}


@pytest.mark.parametrize("body, message", [
    ({"inputs": [{**TENSOR, "shape": [-8, -8]}]}, "inputs.0.shape.0: Input should be greater"),
    ({"inputs": [{**TENSOR, "shape": [-1, -64]}]}, "inputs.0.shape.0: Input should be greater"),
    ({"inputs": [{**TENSOR, "data": [10 ** 400] + ROW[1:]}]}, "integer beyond FP32's range"),
    ({"inputs": [{**TENSOR, "data": [True] + ROW[1:]}]}, "input x holds bool values"),
    ({"inputs": [{**TENSOR, "data": [[[1.0]]]}]}, "input x holds list values"),
    ({"inputs": [{**TENSOR, "parameters": ["a"]}]}, "inputs.0.parameters: Input should be a "
                                                     "valid dictionary"),
    ({"inputs": [{**TENSOR, "parameters": "a"}]}, "inputs.0.parameters: Input should be a "
                                                   "valid dictionary"),
    ({"inputs": [TENSOR], "outputs": [{"name": ["score"]}]}, "outputs.0.name: Input should be a "
                                                            "valid string"),
])
def test_open_inference_protocol_mistakes_are_400s(http, body, message):
    """Issue 24 #4: each of these was a 500 with a traceback."""
    answer = http.post(INFER, json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_a_deeply_nested_infer_body_is_a_400(http):
    body = '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answer = http.post(INFER, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400  # refused on its count of brackets, or by the parser
    assert "nested too deeply" in answer.json()["error"] or \
        "the body holds about 99998 rows" in answer.json()["error"]


def test_a_body_of_too_many_rows_is_refused_before_it_is_parsed(http):
    """Issue 24 #1: the rows and cells of a JSON body are counted on its bytes first."""
    body = b'{"x":[' + b",".join([b"[0]"] * 100_000) + b"]}"
    for endpoint in ("/anomaly_score", "/decode", "/v2/models/vae/infer"):
        answer = http.post(endpoint, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (endpoint, answer.text)
        assert answer.json()["error"].startswith("the body holds about 99999 rows; at most 500")
    cells = b'{"x":[[' + b",".join([b"0"] * 100_000) + b"]]}"
    answer = http.post("/anomaly_score", content=cells, headers={"content-type":
                                                                  "application/json"})
    assert answer.status_code == 400 and "the body holds about 100000 values" in answer.text


def test_null_cells_in_x_are_missing_cells_scored_as_nan_rows(http, runtime, digits_x):
    """Issue 23: a numeric model takes JSON null as a missing cell, and answers as the runtime
    does for NaN; the answer counts each row's observed cells."""
    rows = digits_x[:3].tolist()
    rows[1][5] = rows[2][0] = rows[2][9] = None
    answer = http.post("/anomaly_score", json={"x": rows, "seed": 4}).json()
    x = np.asarray([[np.nan if v is None else v for v in row] for row in rows], np.float32)
    expected = runtime.score(x, runtime.noise(4, 16))
    assert answer["score"] == expected.score.tolist() and answer["observed"] == [64, 63, 62]
    import json
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 64],
                                   "data": x.ravel().tolist()}], "parameters": {"seed": 4}})
    infer = http.post("/v2/models/vae/infer", content=body,  # NaN, as tritonclient sends it
                      headers={"content-type": "application/json"}).json()
    outputs = {o["name"]: o["data"] for o in infer["outputs"]}
    assert outputs["score"] == answer["score"] and outputs["observed"] == [64, 63, 62]


@pytest.mark.parametrize("request_kwargs, message", [
    ({"data": {"file": "http://169.254.169.254/latest"}}, "file is a text field, not an "
                                                          "uploaded file"),
    ({"data": {"file": "rows.csv"}}, "file is a text field, not an uploaded file"),
])
def test_a_file_field_must_be_an_uploaded_part(http, request_kwargs, message):
    """Issue 24 #5: BentoML would download a URL given as text (a 500 here, for want of
    uvloop); the file field takes uploaded parts only."""
    answer = http.post("/anomaly_score_file", files={"n_samples": (None, "1")},
                       **request_kwargs)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


def test_a_long_filename_and_a_corrupt_parquet_are_400s(http, digits_x, tmp_path):
    """Issue 24 #5: a 300-character filename (ENAMETOOLONG), and a Parquet file whose data
    page is damaged, found only when it is read."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    buffer = io.BytesIO()
    np.save(buffer, digits_x[:5])
    answer = http.post("/anomaly_score_file",
                       files={"file": ("r" * 300 + ".npy", buffer.getvalue())})
    assert answer.status_code == 200, answer.text
    pq.write_table(pa.table({f"pixel_{i // 8}_{i % 8}": digits_x[:900, i] for i in range(64)}),
                   tmp_path / "rows.parquet", compression="none")
    data = bytearray((tmp_path / "rows.parquet").read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = b"\xff" * 4096
    answer = http.post("/anomaly_score_file", files={"file": ("rows.parquet", bytes(data))})
    assert answer.status_code == 400, answer.text
    assert "could not be read as .parquet" in answer.json()["error"]
