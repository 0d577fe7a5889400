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
