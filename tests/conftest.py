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


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    from training.config import TrainConfig
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    train(TrainConfig(**SMALL), run_dir, progress=False)
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
               "VAE_MAX_JSON_BYTES": "2000000"}


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
