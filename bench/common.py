"""Helpers shared by the benchmarks: rows, a served model, timing."""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.readiness import wait_ready

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "bundles" / "digits"
RESULTS = ROOT / "bench" / "results"


def seeded_main(doc: str, name: str, run) -> None:
    """The command line of a benchmark run over --seeds: run(seeds, out) gives the figures,
    kept as OUT/NAME.json (its plots, if any, go beside them)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args.seeds, args.out)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")


def digits_rows(n: int, seed: int = 0) -> np.ndarray:
    """n digits-shaped rows: the embedded digits, tiled, with a little noise so rows differ."""
    from serving.tables.read import read_table  # noqa: F401  (serving only; sklearn may be absent)
    try:
        from sklearn.datasets import load_digits
        base = load_digits().data.astype(np.float32)
    except ImportError:
        base = np.random.default_rng(seed).integers(0, 17, (1797, 64)).astype(np.float32)
    rows = np.resize(base, (n, base.shape[1]))
    jitter = np.random.default_rng(seed).normal(0, 0.5, rows.shape).astype(np.float32)
    return np.clip(rows + jitter, 0, 16)


def rate(func, rows: int, min_seconds: float = 2.0) -> float:
    """Rows per second of func(), called until min_seconds have passed (after one warm-up)."""
    func()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_seconds:
        func()
        calls += 1
    return calls * rows / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAY_ENV = {"RAY_AUTH_MODE": "disabled"}  # `ray start` turns token auth on by default


@contextmanager
def ray_cluster():
    """Two Ray nodes on this machine, one CPU each (`ray start --head` and a second raylet
    joined by address); their address. Their files go to a new directory under /tmp, removed
    at the end: Ray's socket paths under it must stay within AF_UNIX's 107 bytes, which a
    pytest temp dir (under xdist, popen-gwN/ more) exceeds. At the end only their processes are
    stopped (`ray stop` would stop every Ray of the machine)."""
    env = {**os.environ, **RAY_ENV}
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="vae-ray-", dir="/tmp")

    def start(*args: str) -> None:
        done = subprocess.run([ray, "start", *args, "--num-cpus=1", "--disable-usage-stats"],
                              env=env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"ray start {' '.join(args)} failed: {done.stderr[-2000:]}")

    port = free_port()
    try:
        start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}")
        start(f"--address=127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes_naming(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_processes_naming(text: str, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, every process whose command line holds
    text (a Ray cluster's temp dir: its GCS, raylets and their helpers), with their children
    (the workers, which exit with their raylet anyway)."""
    import psutil
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if text in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
            found += [process, *process.children(recursive=True)]
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def vae(*args: str) -> subprocess.CompletedProcess:
    """`vae ARGS` in a fresh process, as a user runs it: its output captured, a failure raised."""
    return subprocess.run([sys.executable, "-m", "vae_service.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)


@contextmanager
def served(model: Path, env: dict | None = None, service: str = "serving.http.app:VAE",
           process_out: list | None = None):
    """`bentoml serve SERVICE` on a free port with the given bundle; yields its URL (and, into
    process_out, the server's process)."""
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vae-bench-{port}.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("bentoml")), "serve", service, "--port", str(port),
         "--host", "127.0.0.1"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "VAE_MODEL": str(model), "BENTOML_DO_NOT_TRACK": "True",
             **(env or {})}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, alive=lambda: process.poll() is None, what="bentoml serve")
        except RuntimeError as e:
            raise RuntimeError(f"{e}; see {log.name}") from None
        if process_out is not None:
            process_out.append(process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def metric_sum(text: str, prefix: str, contains: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix) and contains in line)
