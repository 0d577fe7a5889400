"""The largest legal request of each endpoint, and the peak resident memory it costs a worker.

    .venv/bin/python -m bench.memory [--model bundles/digits]

Serves the model with the default limits (docs/contract.md, "Limits"), sends each endpoint the
largest request those limits allow, one at a time, and reads the worker's peak resident set
(VmHWM, reset before each request). tests/http/test_serve.py asserts the same bound.
"""

import argparse
from pathlib import Path

import httpx
import numpy as np

from serving.http.settings import Settings

LIMIT_MB = 1024  # per request: half the 2 GiB each worker has in deploy/kubernetes


def largest_requests(settings: Settings, n_features: int, latent_dim: int) -> dict:
    """{endpoint: JSON body} at the default limits: rows × n_samples at VAE_MAX_ROW_SAMPLES,
    with every optional part of the answer asked for."""
    k = settings.max_samples
    sampled_rows = settings.max_row_samples // k
    rows = np.resize(np.linspace(0.0, 16.0, 97, dtype=np.float32), (settings.max_rows,
                                                                     n_features)).tolist()
    return {
        "encode": {"x": rows[:sampled_rows], "n_samples": k},
        "reconstruct": {"x": rows[:sampled_rows], "n_samples": k},
        "anomaly_score": {"x": rows, "n_samples": settings.max_row_samples // settings.max_rows,
                          "explain": True},
        "decode": {"z": np.zeros((settings.max_rows, latent_dim)).tolist()},
        "sample": {"n": settings.max_sample_n},
    }


def largest_file(settings: Settings, n_features: int, path: Path) -> Path:
    """An .npy of VAE_MAX_FILE_ROWS rows."""
    rows = np.lib.format.open_memmap(path, "w+", np.float32, (settings.max_file_rows,
                                                               n_features))
    rows[:] = np.resize(np.linspace(0.0, 16.0, 97, dtype=np.float32), rows.shape)
    rows.flush()
    return path


def worker_pid(server_pid: int) -> int:
    """The BentoML worker (the process serving HTTP) under `bentoml serve`."""
    import psutil

    workers = [p for p in psutil.Process(server_pid).children(recursive=True)
               if "_bentoml_impl.worker" in " ".join(p.cmdline())]
    if len(workers) != 1:
        raise RuntimeError(f"expected one worker under pid {server_pid}, found {len(workers)}")
    return workers[0].pid


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the kernel's "reset peak RSS"


def worst_json(settings: Settings) -> bytes:
    """The body under VAE_MAX_JSON_BYTES that costs a parser most: one-cell rows."""
    count = (settings.max_json_bytes - 16) // 4
    return b'{"x":[' + b",".join([b"[0]"] * count) + b"]}"


def worst_csv(settings: Settings, n_features: int, path: Path) -> Path:
    """A CSV upload just under VAE_MAX_FILE_BYTES."""
    header = ",".join(f"pixel_{i // 8}_{i % 8}" for i in range(n_features)) + "\n"
    row = (",".join(["16.0"] * n_features) + "\n").encode()
    rows = (settings.max_file_bytes - 4096 - len(header)) // len(row)
    with open(path, "wb") as f:
        f.write(header.encode())
        block = row * 10_000
        for _ in range(rows // 10_000):
            f.write(block)
        f.write(row * (rows % 10_000))
    return path


def concurrent_uploads(url: str, body: bytes, n: int) -> list[int]:
    """n uploads of the same .npy at once: their statuses."""
    from concurrent.futures import ThreadPoolExecutor

    def post(_):
        return httpx.post(f"{url}/anomaly_score_file", files={"file": ("rows.npy", body)},
                          data={"n_samples": "1"}, timeout=600).status_code
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(post, range(n)))


def measure(url: str, pid: int, settings: Settings, n_features: int, latent_dim: int,
            workdir: Path, worst: bool = True) -> dict:
    """{request: {"status", "peak_mb", "answer_mb"}}, each request sent alone; with `worst`,
    also the worst bodies under the byte limits (refused or not) and concurrent uploads."""
    figures = {}
    requests = {name: {"json": body} for name, body in
                largest_requests(settings, n_features, latent_dim).items()}
    upload = largest_file(settings, n_features, workdir / "largest.npy")
    requests["anomaly_score_file"] = {"files": {"file": ("rows.npy", upload.read_bytes())},
                                      "data": {"n_samples": "1"}}
    for name, request in requests.items():
        reset_peak(pid)
        answer = httpx.post(f"{url}/{name}", timeout=600, **request)
        figures[name] = {"status": answer.status_code, "peak_mb": round(peak_rss_mb(pid)),
                         "answer_mb": round(len(answer.content) / 2**20, 1)}
    if not worst:
        return figures
    body = worst_json(settings)
    for endpoint in ("anomaly_score", "decode"):
        reset_peak(pid)
        answer = httpx.post(f"{url}/{endpoint}", content=body, timeout=600,
                            headers={"content-type": "application/json"})
        figures[f"{endpoint}, {len(body) >> 20} MB of one-cell rows"] = {
            "status": answer.status_code, "peak_mb": round(peak_rss_mb(pid)), "answer_mb": 0.0}
    del body
    csv = worst_csv(settings, n_features, workdir / "largest.csv")
    reset_peak(pid)
    with open(csv, "rb") as f:
        answer = httpx.post(f"{url}/anomaly_score_file", files={"file": ("rows.csv", f)},
                            data={"n_samples": "1"}, timeout=600)
    figures[f"anomaly_score_file, {csv.stat().st_size >> 20} MB CSV"] = {
        "status": answer.status_code, "peak_mb": round(peak_rss_mb(pid)),
        "answer_mb": round(len(answer.content) / 2**20, 1)}
    csv.unlink()
    small = workdir / "small.npy"  # 20,000 rows, 5 MB
    np.save(small, np.resize(np.linspace(0.0, 16.0, 97, dtype=np.float32), (20_000, n_features)))
    reset_peak(pid)
    statuses = concurrent_uploads(url, small.read_bytes(), 16)
    figures["16 concurrent 5 MB uploads"] = {
        "status": max(statuses), "statuses": sorted(statuses),
        "peak_mb": round(peak_rss_mb(pid)), "answer_mb": 0.0}
    return figures


def main() -> None:
    import tempfile

    from bench.common import DEFAULT_MODEL, served
    from serving.core.bundle import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args()
    manifest = load_bundle(args.model).manifest
    settings = Settings.from_env({})
    process: list = []
    with tempfile.TemporaryDirectory() as tmp, \
            served(args.model, {"VAE_WORKERS": "1"}, process_out=process) as url:
        figures = measure(url, worker_pid(process[0].pid), settings, manifest.n_features,
                          manifest.latent_dim, Path(tmp))
    for name, f in figures.items():
        status = ", ".join(map(str, sorted(set(f.get("statuses", [f["status"]])))))
        print(f"{name:45s} HTTP {status:8s}  peak RSS {f['peak_mb']:5d} MB  "
              f"answer {f['answer_mb']:6.1f} MB  (bound {LIMIT_MB} MB)")


if __name__ == "__main__":
    main()
