"""Shared fixtures: one small digits run and its bundle, made once per test session."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(epochs=12, hidden=(64, 64), latent_dim=4, patience=100)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`vae ARGS` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "vae_service.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def served_answer(bundle: Path, path: str, body: dict) -> dict:
    """The JSON answer of the `vae` service built on `bundle` (as `bentoml serve` builds it)
    to one request, in a fresh interpreter: a process registers BentoML's metrics once, and
    the session's own service holds them."""
    import json

    code = ("import json, sys; from starlette.testclient import TestClient; "
            "from serving.http.assemble import build; from serving.http.settings import Settings; "
            "service = build(Settings.from_env({'VAE_MODEL': sys.argv[1]})); "
            "http = TestClient(service.to_asgi()).__enter__(); "
            "answer = http.post(sys.argv[2], json=json.loads(sys.argv[3])); "
            "print(json.dumps({'status': answer.status_code, **answer.json()}))")
    done = subprocess.run([sys.executable, "-c", code, str(bundle), path, json.dumps(body)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """`vae ARGS` in this interpreter: for the failure cases, which need no fresh process to
    show their one line and exit code."""
    import contextlib
    import io

    from vae_service.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return subprocess.CompletedProcess(["vae", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    from training.config import TrainConfig
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    train(TrainConfig(**SMALL), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def digits_run_again(tmp_path_factory) -> Path:
    """A second run with digits_run's settings and seed: the same weights, bit for bit."""
    from training.config import TrainConfig
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "digits-again"
    train(TrainConfig(**SMALL), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def no_sampling_run(tmp_path_factory) -> Path:
    """A short run of the deterministic ablation (z = mu, penalty ½‖mu‖²)."""
    from training.config import TrainConfig
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "no-sampling"
    train(TrainConfig(**{**SMALL, "epochs": 3, "sampling": False}), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def bundle_dir(digits_run, tmp_path_factory) -> Path:
    from export.exporter import export_run

    out = tmp_path_factory.mktemp("bundles") / "digits"
    export_run(digits_run, out)
    return out


@pytest.fixture(scope="session")
def fp32_bundle_dir(digits_run, tmp_path_factory) -> Path:
    """The digits run exported in fp32 (bundle_dir is the default export: int8 past its gate)."""
    from export.exporter import export_run

    out = tmp_path_factory.mktemp("bundles") / "digits-fp32"
    export_run(digits_run, out, precision="fp32")
    return out


@pytest.fixture(scope="session")
def runtime(bundle_dir):
    from serving.store import load_runtime

    return load_runtime(bundle_dir)


@pytest.fixture(scope="session")
def digits_x() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


SERVICE_ENV = {"VAE_MAX_ROWS": "500", "VAE_MAX_SAMPLE_N": "300",  # small limits: cheap to exceed
               "VAE_MAX_JSON_BYTES": "2000000", "VAE_MAX_ROW_SAMPLES": "8192",
               "VAE_MAX_FILE_ROWS": "1000"}


@pytest.fixture(scope="session")
def vae_service(bundle_dir):
    """The `vae` BentoML service on the test bundle, built as `bentoml serve` builds it
    (serving/http/app.py), from settings rather than the environment."""
    from serving.http.assemble import build
    from serving.http.settings import Settings

    return build(Settings.from_env({"VAE_MODEL": str(bundle_dir), **SERVICE_ENV}))


@pytest.fixture(scope="session")
def service(vae_service):
    return vae_service()


# -- a mixed table (issue 23): ids, a label column, categories, missing cells ----------------

N = 6000


def transactions(n: int, seed: int):
    """A transactions table: an id, a timestamp, amounts that depend on the merchant, a few
    frauds (huge or tiny amounts at night), a label column and 8% of some cells blank."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    merchant = rng.choice(["grocery", "fuel", "travel", "cafe"], n, p=[.4, .3, .1, .2])
    base = {"grocery": 40.0, "fuel": 60.0, "travel": 400.0, "cafe": 8.0}
    amount = np.array([base[m] for m in merchant]) * rng.lognormal(0, 0.2, n)
    hour = rng.integers(8, 22, n).astype(float)
    fraud = np.zeros(n, int)
    bad = rng.choice(n, n // 50, replace=False)
    fraud[bad] = 1
    amount[bad] *= rng.choice([20.0, 0.02], len(bad))
    hour[bad] = rng.integers(0, 5, len(bad))
    table = pd.DataFrame({"txn_id": [f"t{seed}-{i:06d}" for i in range(n)],
                          "timestamp": pd.date_range("2026-01-01", periods=n, freq="min")
                          .astype(str),
                          "amount": amount.round(2), "merchant": merchant, "hour": hour,
                          "country": rng.choice(["FR", "DE"], n), "is_fraud": fraud})
    for column in ("amount", "merchant", "hour"):
        table[column] = table[column].astype(object)
        table.loc[rng.random(n) < 0.08, column] = None
    return table


@pytest.fixture(scope="session")
def mixed(tmp_path_factory):
    """A trained and exported mixed model, its training CSV and `vae train`'s lines."""
    tmp = tmp_path_factory.mktemp("mixed")
    transactions(N, 0).to_csv(tmp / "tx.csv", index=False)
    trained = run_cli("train", "--data", str(tmp / "tx.csv"), "--out", str(tmp / "run"),
                      "--label-column", "is_fraud", "--epochs", "30", "--hidden", "32,32",
                      "--latent-dim", "2", "--quiet")
    assert trained.returncode == 0, trained.stderr
    exported = run_cli("export", str(tmp / "run"), "--out", str(tmp / "bundle"),
                       "--target-fpr", "0.05")
    assert exported.returncode == 0, exported.stderr
    from serving.store import load_runtime
    return {"dir": tmp, "lines": trained.stderr, "runtime": load_runtime(tmp / "bundle"),
            "bundle": tmp / "bundle"}
