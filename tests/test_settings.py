import pytest


def test_settings_from_the_environment():
    from serving.http.settings import Settings, container_cpus

    assert Settings.from_env({"VAE_MAX_ROWS": "7"}).max_rows == 7
    derived = Settings.from_env({"VAE_WORKERS": "1", "VAE_MODEL_WORKERS": "1"}).ort_threads
    assert derived == max(1, int(container_cpus() - 1))
    assert Settings.from_env({"VAE_ORT_THREADS": "3"}).ort_threads == 3
    with pytest.raises(ValueError, match="VAE_WORKERS='two' is not a positive integer"):
        Settings.from_env({"VAE_WORKERS": "two"})
