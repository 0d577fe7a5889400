"""A real `bentoml serve` process on a free port, driven by bentoml.SyncHTTPClient."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest

from bench.common import free_port
from bench.readiness import wait_ready
from tests.conftest import ROOT


def start_server(bundle: Path, home: Path, log_path: Path) -> dict:
    """`bentoml serve` of the bundle on a free port, ready."""
    port = free_port()
    env = {**os.environ, "VAE_MODEL": str(bundle), "BENTOML_HOME": str(home),
           "BENTOML_DO_NOT_TRACK": "True", "VAE_MAX_ROWS": "10000",
           "VAE_HEADER_TIMEOUT": "5", "VAE_BODY_TIMEOUT": "10"}
    process = subprocess.Popen([str(Path(sys.executable).with_name("bentoml")), "serve",
                                "--port", str(port), "--host", "127.0.0.1"],
                               cwd=ROOT, env=env, stdout=open(log_path, "w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, alive=lambda: process.poll() is None, what="bentoml serve")
    except RuntimeError as e:
        pytest.fail(f"{e}: {log_path.read_text()[-3000:]}")
    return {"url": url, "process": process, "log": log_path, "bundle": bundle, "home": home}


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    served = start_server(bundle_dir, home, home / "serve.log")
    yield served
    if served["process"].poll() is None:
        os.killpg(served["process"].pid, signal.SIGTERM)
        served["process"].wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    with bentoml.SyncHTTPClient(server["url"], timeout=60) as client:
        yield client


def test_every_endpoint_through_the_client(client, runtime, digits_x):
    x = digits_x[:50]
    scored = client.anomaly_score(x=x.tolist(), n_samples=16, seed=3, explain=True)
    expected = runtime.score(x, runtime.noise(3, 16), explain=True)
    assert scored["score"] == expected.score.tolist()
    assert scored["feature_nll"] == expected.feature_nll.tolist()
    assert scored["threshold"] == float(runtime.threshold)
    assert scored["model_version"] == runtime.version and scored["seed"] == 3

    encoded = client.encode(x=x.tolist(), n_samples=2, seed=1)
    mu, _, z = runtime.graphs.encode(x, runtime.noise(1, 2, 0).rows(0, 50))
    assert encoded["mu"] == mu.tolist() and encoded["z"] == z.tolist()
    assert client.decode(z=mu.tolist())["x_mean"] == runtime.graphs.decode(mu)[0].tolist()
    assert client.sample(n=4, seed=2)["x"] == runtime.sample(4, seed=2)[0].tolist()
    rebuilt = client.reconstruct(x=x.tolist(), n_samples=3, seed=4)["x_mean"]
    np.testing.assert_array_equal(np.float32(rebuilt), runtime.reconstruct(x, 3, seed=4)[0])
    assert client.metadata()["version"] == runtime.version


def test_file_endpoint_through_the_client(client, runtime, digits_x, tmp_path):
    np.save(tmp_path / "rows.npy", digits_x[:2000])
    result = client.anomaly_score_file(file=tmp_path / "rows.npy", n_samples=4, seed=8)
    records = np.load(result)
    expected = runtime.score(digits_x[:2000], runtime.noise(8, 4)).score
    np.testing.assert_array_equal(records["score"], expected)


def test_same_seed_same_bits_and_seedless_replay(client, digits_x):
    x = digits_x[100:110].tolist()
    assert client.anomaly_score(x=x, seed=12)["score"] == client.anomaly_score(x=x, seed=12)["score"]
    first = client.anomaly_score(x=x)
    assert client.anomaly_score(x=x, seed=first["seed"])["score"] == first["score"]


def test_concurrent_requests_answer_as_if_alone(server, runtime, digits_x):
    """Many threads with different seeds and sizes at once: each answer is exactly the
    runtime's for its own rows and seed, whatever the batcher merged it with."""
    jobs = [(seed, int(start), int(size)) for seed, (start, size) in enumerate(
        zip(np.random.default_rng(0).integers(0, 1700, 96),
            np.random.default_rng(1).choice([1, 1, 1, 3, 20, 90], 96)))]

    def call(job):
        seed, start, size = job
        with httpx.Client(base_url=server["url"], timeout=60) as http:
            response = http.post("/anomaly_score", json={
                "x": digits_x[start:start + size].tolist(), "seed": seed, "n_samples": 16})
        assert response.status_code == 200, response.text
        return response.json()["score"]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, jobs))
    for (seed, start, size), answer in zip(jobs, answers):
        expected = runtime.score(digits_x[start:start + size], runtime.noise(seed, 16))
        assert answer == expected.score.tolist()
    merged = {name: metric_value(server, name)
              for name in ("vae_merged_requests_sum", "vae_merged_requests_count")}
    # more requests than graph calls: some calls answered several requests at once
    assert merged["vae_merged_requests_sum"] > merged["vae_merged_requests_count"] > 0, merged


def metric_value(server, name: str) -> float:
    for line in httpx.get(f"{server['url']}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_custom_metrics(server, client, runtime, digits_x):
    x = np.concatenate([digits_x[:6], np.full((1, 64), 16.0, np.float32)])  # one odd row
    flagged = int(runtime.score(x, runtime.noise(0, 16)).is_anomaly.sum())
    assert flagged >= 1
    names = ('vae_rows_total{endpoint="anomaly_score"}', "vae_anomaly_score_count",
             'vae_anomalies_total{endpoint="anomaly_score"}')
    before = {name: metric_value(server, name) for name in names}
    client.anomaly_score(x=x.tolist(), seed=0)
    after = {name: metric_value(server, name) for name in names}
    assert after[names[0]] == before[names[0]] + 7
    assert after[names[1]] == before[names[1]] + 7
    assert after[names[2]] == before[names[2]] + flagged


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_api_page_in_headless_chromium(server, tmp_path):
    """`/` is what a user opens first: its own /docs.json request is answered, and it lists
    every endpoint, each with its example."""
    from deploy.api_page import docs_json_answered, documented, load_page, unlisted

    assert server["process"].poll() is None  # the module's tests that stop it come later
    before = docs_json_answered(server["log"].read_text())  # the client fixture's, say
    dom = load_page(shutil.which("chromium"), f"{server['url']}/", tmp_path / "page.png")
    assert docs_json_answered(server["log"].read_text()) >= before + 2  # the DOM, the picture
    paths, without_example = documented(server["url"])
    assert {"/anomaly_score", "/anomaly_score_file", "/encode", "/sample"} <= set(paths)
    assert not unlisted(dom, paths) and not without_example
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_client_errors_over_the_wire(server):
    response = httpx.post(f"{server['url']}/anomaly_score", json={"x": [[1.0, 2.0]]})
    assert response.status_code == 400
    assert response.json() == {"error": "x has 2 columns; this model expects 64 "
                                        "(feature_names in /metadata)"}


def test_unknown_paths_add_no_metric_series(server):
    """A scanner's random paths: one label value for all of them, and 404s all the same."""
    def series() -> int:
        return len(httpx.get(f"{server['url']}/metrics").text.splitlines())
    httpx.get(f"{server['url']}/nowhere-0")
    before = series()
    for i in range(1, 40):
        response = httpx.get(f"{server['url']}/nowhere-{i}/x?y={i}")
        assert response.status_code == 404 and "no such endpoint" in response.json()["error"]
    assert series() == before
    assert httpx.get(f"{server['url']}/").status_code == 200  # the docs page and its assets
    assert httpx.get(f"{server['url']}/static_content/swagger-ui.css").status_code == 200


def test_a_client_mistake_is_one_log_line(server):
    """Not BentoML's ERROR with a 14-line traceback: one INFO line, endpoint, status, why."""
    for body in ({"x": [[1.0] * 5]}, {"x": [[1.0] * 64], "nsamples": 2}, {"x": [[1.0] * 64],
                                                                          "n_samples": 0}):
        assert httpx.post(f"{server['url']}/anomaly_score", json=body).status_code == 400
    log = server["log"].read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if "POST /anomaly_score -> 400" in line]
    assert len(lines) >= 3, log[-3000:]
    assert any("x has 5 columns; this model expects 64" in line for line in lines)
    assert any("nsamples is not a field of this endpoint; expected only x, " in line
               for line in lines)
    oip = httpx.post(f"{server['url']}/v2/models/vae/infer", json={"inputs": []})
    assert oip.status_code == 400
    assert f"POST /v2/models/vae/infer -> 400: {oip.json()['error']}" in server["log"].read_text()
    form = httpx.post(f"{server['url']}/encode", content=b"x=1",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert "POST /encode -> 415: the body is application/x-www-form-urlencoded" in \
        server["log"].read_text()


def test_open_inference_protocol_with_tritonclient(server, runtime, digits_x):
    """A real third-party client of KServe V2 / Triton's HTTP protocol, unchanged."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(server["url"].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("vae")
    metadata = client.get_model_metadata("vae")
    assert metadata["versions"] == [runtime.version]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    x = digits_x[:30]
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    outputs = [triton.InferRequestedOutput(name, binary_data=False)
               for name in ("score", "recon_nll", "kl", "percentile", "is_anomaly")]
    result = client.infer("vae", [tensor], outputs=outputs,
                          parameters={"n_samples": 16, "seed": 3})
    expected = runtime.score(x, runtime.noise(3, 16))
    for name in ("score", "recon_nll", "kl", "percentile", "is_anomaly"):
        np.testing.assert_array_equal(result.as_numpy(name), getattr(expected, name), name)
    answer = result.get_response()
    assert answer["parameters"] == {"seed": 3, "model_version": runtime.version}
    served = httpx.post(f"{server['url']}/anomaly_score",
                        json={"x": x.tolist(), "seed": 3}).json()
    assert result.as_numpy("score").tolist() == served["score"]  # bit for bit
    with pytest.raises(InferenceServerException, match="model 'other' is not served here"):
        client.infer("other", [tensor])
    narrow = triton.InferInput("x", [1, 3], "FP32")
    narrow.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=False)
    with pytest.raises(InferenceServerException, match="x has 3 columns; this model expects"):
        client.infer("vae", [narrow])


def test_a_second_server_on_the_same_home_keeps_the_first_ones_metrics(server, client,
                                                                         digits_x, tmp_path):
    client.anomaly_score(x=digits_x[:3].tolist(), seed=0)
    name = 'vae_rows_total{endpoint="anomaly_score"}'
    before = metric_value(server, name)
    assert before >= 3
    second = start_server(server["bundle"], server["home"], tmp_path / "second.log")
    try:
        assert metric_value(server, name) == before
        client.anomaly_score(x=digits_x[:2].tolist(), seed=0)
        assert metric_value(server, name) == before + 2
        assert metric_value({"url": second["url"]}, name) == 0
    finally:
        os.killpg(second["process"].pid, signal.SIGTERM)
        second["process"].wait(timeout=30)


def test_serving_processes_never_load_torch(server):
    import psutil

    root = psutil.Process(server["process"].pid)
    pids = [root.pid] + [child.pid for child in root.children(recursive=True)]
    assert len(pids) >= 2  # the arbiter and the worker that holds the graphs
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        assert "libtorch" not in maps and "/torch/" not in maps, pid


def test_a_damaged_bundle_stops_the_server_at_start_in_one_line(bundle_dir, tmp_path):
    """Not workers crashing in a loop behind an open port: the process exits, so Kubernetes
    shows CrashLoopBackOff and a rollout stops."""
    import shutil

    damaged = tmp_path / "bundle"
    shutil.copytree(bundle_dir, damaged)
    (damaged / "decoder.onnx").unlink()
    env = {**os.environ, "VAE_MODEL": str(damaged), "BENTOML_HOME": str(tmp_path / "home"),
           "BENTOML_DO_NOT_TRACK": "True"}
    done = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "serve", "--port",
                           str(free_port()), "--host", "127.0.0.1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"vae-service: cannot serve {damaged}: bundle {damaged} has no decoder.onnx" in output
    assert "Traceback" not in output, output[-3000:]


def test_an_upload_whose_client_went_away_stops_being_scored(server, tmp_path):
    """Scoring an upload stops between chunks once its client has disconnected."""
    path = tmp_path / "big.npy"
    np.save(path, np.resize(np.arange(64, dtype=np.float32), (400_000, 64)))
    name = 'vae_rows_total{endpoint="anomaly_score_file"}'
    before = metric_value(server, name)
    with pytest.raises(httpx.TimeoutException):  # the client gives up after 2 s
        httpx.post(f"{server['url']}/anomaly_score_file", timeout=httpx.Timeout(60, read=2),
                   files={"file": ("big.npy", path.read_bytes())}, data={"n_samples": "64"})
    time.sleep(3)
    stopped_at = metric_value(server, name)
    time.sleep(3)
    assert metric_value(server, name) == stopped_at  # no chunk scored any more
    assert stopped_at < before + 400_000  # it did not run to the end
    assert httpx.post(f"{server['url']}/anomaly_score",
                      json={"x": [[1.0] * 64]}).status_code == 200


def raw_request(server, data: bytes) -> bytes:
    """What the server sends back, until it closes the connection, for these bytes sent on a
    fresh connection and then nothing more."""
    port = int(server["url"].rsplit(":", 1)[1])
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(data)
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("opening", [b"", b"POST /encode HTTP/1.1\r\nHost: x\r\n"],
                         ids=["no bytes", "headers never finished"])
def test_a_connection_without_a_request_is_closed(server, opening):
    """A connection that never completes its headers is closed (VAE_HEADER_TIMEOUT), with no
    answer, instead of being held open for ever."""
    assert raw_request(server, opening) == b""


def test_a_trickled_body_is_answered_408(server):
    log_size = server["log"].stat().st_size
    answer = raw_request(server, b"POST /anomaly_score HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: 1000"
                                 b"\r\n\r\n{\"x\": [[")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body) == {"error": "the body did not arrive within 10 s; send it whole "
                                         "and at once, or raise the service's VAE_BODY_TIMEOUT"}
    assert httpx.post(f"{server['url']}/anomaly_score",
                      json={"x": [[1.0] * 64]}).status_code == 200
    log = server["log"].read_text()[log_size:]
    assert "POST /anomaly_score -> 408: the body did not arrive" in log
    assert "Traceback" not in log and "ERROR" not in log, log


def test_the_largest_legal_request_of_each_endpoint_stays_under_its_bound(server, runtime,
                                                                        tmp_path):
    """At the default limits, each endpoint's largest request (rows × n_samples at
    VAE_MAX_ROW_SAMPLES, VAE_MAX_ROWS rows, a VAE_MAX_FILE_ROWS upload) keeps the worker's
    peak resident memory under bench.memory.LIMIT_MB, half the Deployment's 2 GiB."""
    from bench.memory import LIMIT_MB, measure, worker_pid
    from serving.http.settings import Settings

    figures = measure(server["url"], worker_pid(server["process"].pid), Settings.from_env({}),
                      runtime.n_features, runtime.latent_dim, tmp_path)
    legal = {"encode", "decode", "sample", "reconstruct", "anomaly_score", "anomaly_score_file"}
    assert legal < set(figures)
    for name, figure in figures.items():
        assert figure["peak_mb"] < LIMIT_MB, (name, figure)  # issue 24: the worst bodies too
        if name in legal:
            assert figure["status"] == 200, (name, figure)
        elif "one-cell rows" in name:
            assert figure["status"] == 400, (name, figure)  # refused before parsing
        elif "concurrent" in name:
            assert set(figure["statuses"]) <= {200, 503} and 200 in figure["statuses"]


def test_the_server_stops_when_its_bundle_is_deleted(bundle_dir, tmp_path):
    """Issue 24 #12: without its bundle no worker could be restarted; the server stops in one
    line instead of staying up with no worker."""
    import shutil
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    served = start_server(copy, tmp_path / "home", tmp_path / "serve.log")
    try:
        shutil.rmtree(copy)
        served["process"].wait(timeout=60)
    finally:
        if served["process"].poll() is None:
            os.killpg(served["process"].pid, signal.SIGKILL)
    log = served["log"].read_text()
    assert f"vae-service: the bundle {copy} is gone; stopping the server" in log


def test_an_unparsable_request_gets_the_json_error_shape(server):
    """Issue 24 #6: `Content-Length: -1` is answered by uvicorn itself; still `{"error": ...}`."""
    host, port = server["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /anomaly_score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: -1\r\n\r\n{}")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head.lower()
    assert json.loads(body)["error"].startswith("the request could not be parsed")


def test_graphs_that_do_not_match_the_manifest_stop_the_server_in_one_line(bundle_dir,
                                                                          tmp_path):
    """Issue 24 #10: the decoder in the encoder's place (sha256 updated) is refused when
    `bentoml serve` starts, not in a crash-loop of workers."""
    import shutil

    from serving.core.bundle import file_sha256
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    encoder, decoder = (copy / "encoder.onnx").read_bytes(), (copy / "decoder.onnx").read_bytes()
    (copy / "encoder.onnx").write_bytes(decoder)
    (copy / "decoder.onnx").write_bytes(encoder)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["sha256"] = {name: file_sha256(copy / name) for name in manifest["sha256"]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    done = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "serve", "--port",
                           str(free_port())], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "VAE_MODEL": str(copy),
                                            "BENTOML_HOME": str(tmp_path / "home")})
    assert done.returncode != 0
    assert f"vae-service: cannot serve {copy}: the encoder graph has inputs ['z']" in \
        done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_stops_cleanly(server):
    process = server["process"]
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=30) == 0  # last: it stops the module's server

