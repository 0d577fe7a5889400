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
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """`vae ARGS` in this interpreter: for the failure cases, which need no fresh process to
    show their one line and exit code."""
    import contextlib
    import io

    from cli import main

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
def service_module(bundle_dir):
    """serving.http.service on the test bundle, imported once, as `bentoml serve` does: it reads
    its settings when imported, and its Prometheus metrics may be registered once a process."""
    os.environ.update({"VAE_MODEL": str(bundle_dir), **SERVICE_ENV})
    import serving.http.service
    yield serving.http.service
    for name in ("VAE_MODEL", *SERVICE_ENV):
        os.environ.pop(name)


@pytest.fixture(scope="session")
def service(service_module):
    return service_module.VAE()
