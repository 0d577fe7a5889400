import os
import subprocess
import sys

import pytest

from serving.http import settings
from serving.http.settings import Settings


def test_settings_from_the_environment():
    assert Settings.from_env({"VAE_MAX_ROWS": "7"}).max_rows == 7
    assert Settings.from_env({"VAE_ORT_THREADS": "3"}).ort_threads == 3
    with pytest.raises(ValueError, match="VAE_WORKERS='two' is not a positive integer"):
        Settings.from_env({"VAE_WORKERS": "two"})


@pytest.mark.parametrize("cpus,workers,threads", [(4.0, 1, 4), (4.0, 2, 2), (4.0, 3, 1),
                                                  (2.5, 1, 2), (2.0, 8, 1), (0.5, 1, 1)])
def test_onnxruntime_threads_share_the_containers_cpus(monkeypatch, cpus, workers, threads):
    """Unset, VAE_ORT_THREADS splits the container's whole CPUs among the workers."""
    monkeypatch.setattr(settings, "container_cpus", lambda: cpus)
    assert Settings.from_env({"VAE_WORKERS": str(workers)}).ort_threads == threads


def test_importing_the_service_modules_only_defines(tmp_path):
    """serving.http.service and .assemble define; only serving.http.app (what `bentoml serve`
    imports) reads the environment, opens the bundle and adjusts BentoML."""
    code = ("import serving.http.service, serving.http.assemble\n"
            "from uvicorn.protocols.http import h11_impl\n"
            "assert not getattr(h11_impl.H11Protocol.send_400_response, 'as_json', False)\n"
            "import serving.http.app\n")
    env = {**os.environ, "VAE_MODEL": str(tmp_path / "nothing-here")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"vae-service: cannot serve {tmp_path / 'nothing-here'}")
