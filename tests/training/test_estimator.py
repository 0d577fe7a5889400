"""`training.VAE`, the detector as a scikit-learn estimator, and `serving.api.load`, its
torch-free loader (issue 25): the same bits as `vae score` and `/anomaly_score`."""

import os
import pickle
import signal
import subprocess
import sys
import warnings

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli

SMALL = dict(epochs=8, hidden=(32, 32), latent_dim=4, threads=1)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """WDBC's 30 measurements (all continuous: every column is numeric)."""
    from sklearn.datasets import load_breast_cancer
    return load_breast_cancer(as_frame=True).data.astype(np.float32)


@pytest.fixture(scope="module")
def fitted(frame):
    from training import VAE
    return VAE(**SMALL).fit(frame.iloc[:400])


def test_fit_returns_the_estimator_with_pyods_fitted_state(fitted, frame):
    assert fitted.decision_scores_.shape == (400,) and fitted.labels_.shape == (400,)
    assert set(np.unique(fitted.labels_)) <= {0, 1}
    np.testing.assert_array_equal(fitted.labels_, fitted.decision_scores_ > fitted.threshold_)
    assert list(fitted.feature_names_in_) == list(frame.columns)
    assert fitted.transform(frame.iloc[:5]).shape == (5, 4)
    assert fitted.sample(3, seed=1).shape == (3, 30)
    np.testing.assert_array_equal(fitted.score_samples(frame.iloc[:5]),
                                  -fitted.decision_function(frame.iloc[:5]))


def test_columns_are_matched_by_name(fitted, frame):
    rows = frame.iloc[400:500]
    expected = fitted.decision_function(rows)
    np.testing.assert_array_equal(fitted.decision_function(rows[rows.columns[::-1]]), expected)
    np.testing.assert_array_equal(fitted.decision_function(rows.to_numpy()), expected)
    with pytest.raises(ValueError, match="lacks 1 of the model's 30 feature columns"):
        fitted.decision_function(rows.drop(columns=["mean area"]))
    runtime = fitted.detector_.runtime
    reordered = rows[rows.columns[::-1]]
    np.testing.assert_array_equal(runtime.score(reordered, runtime.noise(0, 16)).score,
                                  expected)  # the runtime itself never goes by position


def test_scores_equal_vae_score_and_the_service_bit_for_bit(fitted, frame, tmp_path):
    bundle = fitted.save(tmp_path / "bundle")
    rows = frame.iloc[400:]
    expected = fitted.decision_function(rows)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    done = run_cli("score", str(tmp_path / "rows.csv"), "--model", str(bundle), "--out",
                   str(tmp_path / "scores.csv"), "--seed", "0", "--quiet")
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(tmp_path / "scores.csv")
    np.testing.assert_array_equal(scored["score"].to_numpy(np.float32), expected)
    from tests.http.test_serve import start_server
    served = start_server(bundle, tmp_path / "home", tmp_path / "serve.log")
    try:
        answer = httpx.post(f"{served['url']}/anomaly_score",
                            json={"x": rows.to_numpy().tolist(), "seed": 0}, timeout=60)
        assert answer.json()["score"] == expected.tolist()
    finally:
        os.killpg(served["process"].pid, signal.SIGTERM)
        served["process"].wait(timeout=30)


def test_the_loader_is_torch_free_and_gives_the_same_bits(fitted, frame, tmp_path):
    bundle = fitted.save(tmp_path / "bundle")
    rows = frame.iloc[400:450]
    np.save(tmp_path / "rows.npy", rows.to_numpy())
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch fails
            "import numpy as np\n"
            "from serving.api import load\n"
            f"d = load({str(bundle)!r})\n"
            f"np.save({str(tmp_path / 'out.npy')!r}, "
            f"d.decision_function(np.load({str(tmp_path / 'rows.npy')!r})))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), fitted.decision_function(rows))


def test_clone_pickle_and_save_keep_the_model(fitted, frame, tmp_path):
    from sklearn.base import clone
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "detector_")
    again = pickle.loads(pickle.dumps(fitted))
    rows = frame.iloc[:40]
    np.testing.assert_array_equal(again.decision_function(rows), fitted.decision_function(rows))


def test_a_dataframe_trains_with_train_itself(frame, tmp_path):
    """train(TrainConfig(data=df)) used to fail with 'The truth value of a DataFrame is
    ambiguous' and leave an empty run directory."""
    from training.config import TrainConfig
    from training.train import train
    metrics = train(TrainConfig(data=frame.iloc[:300], epochs=2, hidden=(8, 8), latent_dim=2),
                    tmp_path / "run", progress=False, threads=1)
    assert metrics["train_rows"] == 240 and metrics["dataset"] == "the table"
    assert TrainConfig.from_dict(__import__("torch").load(
        tmp_path / "run" / "model.pt", weights_only=True)["config"]).data == \
        "in memory (DataFrame)"


def test_scikit_learns_own_estimator_checks(tmp_path):
    """check_estimator with the failures this detector has by design, each explained."""
    from sklearn.utils.estimator_checks import check_estimator
    from training import VAE
    expected = {
        "check_estimators_nan_inf": "NaN is a missing cell, by design (issue 23); infinity "
                                    "is refused",
        "check_transformer_preserve_dtypes": "the graphs compute in float32",
        "check_methods_sample_order_invariance": "a row's noise depends on its position, as "
                                                 "in every surface of the contract",
        "check_methods_subset_invariance": "the same: noise by position",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(VAE(epochs=2, hidden=(8, 8), latent_dim=2, threads=1),
                        expected_failed_checks=expected)
