"""The Student-t cell density (`vae train --likelihood student-t`): its maths against scipy's,
one score from torch, the runtime, `vae score` and HTTP, and heavier-tailed imputations."""

import json

import numpy as np
import pytest
from scipy import stats

from serving.core.bundle import load_bundle
from serving.core.impute import draw_imputations
from serving.core.schema import Schema
from serving.core.scores import STUDENT_T_NU, _cell_terms
from tests.conftest import run_cli, run_cli_here, served_answer, transactions


def numeric_schema(f: int) -> Schema:
    return Schema.numeric([f"c{j}" for j in range(f)])


def test_a_student_t_cell_is_scipys_t_density_and_a_missing_cell_counts_nothing():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (5, 4)).astype(np.float32)
    mean = rng.normal(0, 1, (3, 5, 4)).astype(np.float32)
    logvar = rng.normal(0, 1, (3, 5, 4)).astype(np.float32)
    expected = -stats.t.logpdf(x, df=STUDENT_T_NU, loc=mean, scale=np.exp(0.5 * logvar))
    cells = _cell_terms(x.copy(), (mean, logvar), numeric_schema(4), student_t=True)
    np.testing.assert_allclose(cells, expected, rtol=1e-5, atol=1e-5)
    gaussian = _cell_terms(x.copy(), (mean, logvar), numeric_schema(4))
    np.testing.assert_allclose(gaussian, -stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)),
                               rtol=1e-5, atol=1e-5)
    x[1, 2] = np.nan
    blanked = _cell_terms(x, (mean, logvar), numeric_schema(4), student_t=True)
    assert (blanked[:, 1, 2] == 0).all()
    np.testing.assert_allclose(np.delete(blanked.reshape(3, -1), 6, axis=1),
                               np.delete(expected.reshape(3, -1), 6, axis=1), rtol=1e-5)


def test_student_t_imputations_have_the_t_distributions_tails():
    """Each missing cell's draw is mean + sd · t(5): beyond 3 scales in about 3.0% of draws
    (a normal: 0.27%)."""
    rows, f = 4000, 5
    x = np.full((rows, f), np.nan, np.float32)
    decoded = (np.zeros((1, rows, f), np.float32), np.zeros((1, rows, f), np.float32))
    log_w = np.zeros((1, rows), np.float32)
    schema = numeric_schema(f)
    tails = {}
    for student_t in (False, True):
        draws = draw_imputations(x, decoded, log_w, schema, 7, 2, student_t=student_t)
        tails[student_t] = float(np.mean(np.abs(draws) > 3))
    assert tails[False] < 0.006
    assert 0.024 < tails[True] < 0.036
    assert tails[True] == pytest.approx(2 * stats.t.sf(3, STUDENT_T_NU), abs=0.006)


@pytest.fixture(scope="module")
def student_t_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("student-t")
    done = run_cli("train", "--data", "breast-cancer", "--likelihood", "student-t",
                   "--contamination", "auto", "--outlying", "3", "--epochs", "8",
                   "--hidden", "32,32", "--latent-dim", "3", "--out", str(tmp / "run"),
                   "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "likelihood student-t, contamination auto at 3 robust SDs" in done.stdout
    done = run_cli("export", str(tmp / "run"), "--out", str(tmp / "bundle"),
                   "--precision", "fp32")
    assert done.returncode == 0, done.stderr[-2000:]  # its parity check: torch's log-likelihood
    return tmp


def test_a_student_t_bundle_scores_as_torch_does_on_every_surface(student_t_bundle):
    import torch
    from sklearn.datasets import load_breast_cancer

    from serving.core.runtime import VAERuntime
    from training.train import load_run

    bundle = load_bundle(student_t_bundle / "bundle")
    assert bundle.manifest.likelihood == "student-t"
    runtime = VAERuntime(bundle, threads=1)
    x = load_breast_cancer().data.astype(np.float32)[:300]
    scores = runtime.score(x, runtime.noise(5, 16)).score

    vae, _ = load_run(student_t_bundle / "run")
    eps = runtime.noise(5, 16).rows(0, len(x))
    with torch.no_grad():  # the importance-weighted bound from torch's Student-t log_px
        mu, logvar = vae.encode(torch.from_numpy(x))
        z = vae.reparameterize(mu, logvar, torch.from_numpy(eps))
        log_px = vae.log_px(torch.from_numpy(x), vae.decode(z)).double()
        log_w = log_px + 0.5 * (torch.from_numpy(eps).double().square().sum(-1)
                                - z.double().square().sum(-1) + logvar.double().sum(-1))
        theirs = -(torch.logsumexp(log_w, 0) - np.log(16)).numpy()
        vae.student_t = False  # the Gaussian's log-likelihood of the same decoder differs
        gaussian = vae.log_px(torch.from_numpy(x), vae.decode(z)).double()
    np.testing.assert_allclose(scores, theirs, rtol=1e-4, atol=1e-3)
    assert float((gaussian - log_px).abs().max()) > 1.0

    np.save(student_t_bundle / "rows.npy", x)
    done = run_cli("score", str(student_t_bundle / "rows.npy"), "--model",
                   str(student_t_bundle / "bundle"), "--out", str(student_t_bundle / "s.npy"),
                   "--seed", "5", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.array_equal(np.load(student_t_bundle / "s.npy")["score"], scores)
    answer = served_answer(student_t_bundle / "bundle", "/anomaly_score",
                           {"x": x[40:45].tolist(), "seed": 5})
    assert answer["score"] == runtime.score(x[40:45], runtime.noise(5, 16)).score.tolist()


def test_a_student_t_bundle_imputes_with_the_ts_weights_and_draws(student_t_bundle):
    from sklearn.datasets import load_breast_cancer

    from serving.core.runtime import VAERuntime

    runtime = VAERuntime(load_bundle(student_t_bundle / "bundle"), threads=1)
    x = load_breast_cancer().data.astype(np.float32)[:60]
    x[::2, 3], x[1::3, 7] = np.nan, np.nan
    answers = {}
    for student_t in (False, True):  # the Gaussian's answers, from the same graphs
        runtime.graphs.student_t = student_t
        answers[student_t] = runtime.impute(x, 16, 0), runtime.impute(x, 16, 0, draws=3)
    missing = np.isnan(x)
    for t_answer, gaussian in zip(answers[True], answers[False]):
        assert np.array_equal(t_answer[..., ~missing], gaussian[..., ~missing])
        assert not np.allclose(t_answer[..., missing], gaussian[..., missing])


def test_a_mixed_table_trains_and_exports_with_the_student_t_likelihood(tmp_path):
    """Numeric cells get the t and categorical ones their softmax: export's parity check
    compares the runtime's score with torch's on rows with missing cells."""
    transactions(1500, 0).to_csv(tmp_path / "tx.csv", index=False)
    done = run_cli("train", "--data", str(tmp_path / "tx.csv"), "--label-column", "is_fraud",
                   "--likelihood", "student-t", "--epochs", "4", "--hidden", "32,32",
                   "--latent-dim", "2", "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli("export", str(tmp_path / "run"), "--out", str(tmp_path / "bundle"),
                   "--precision", "fp32")
    assert done.returncode == 0, done.stderr[-2000:]
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest.likelihood == "student-t+categorical"
    assert not bundle.manifest.schema_.all_numeric


def test_a_student_t_manifest_without_a_schema_is_refused(student_t_bundle, tmp_path):
    import shutil

    from serving.core.bundle import BundleError

    shutil.copytree(student_t_bundle / "bundle", tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    del manifest["schema"]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="a student-t likelihood needs the column schema"):
        load_bundle(tmp_path / "b")


@pytest.mark.parametrize("flag, value, expected", [
    ("--likelihood", "cauchy", "invalid choice: 'cauchy'"),
    ("--outlying", "0", "'0' is not a finite number > 0"),
    ("--outlying", "inf", "'inf' is not a finite number > 0"),
])
def test_bad_likelihood_or_outlying_flags_are_refused_in_one_line(tmp_path, flag, value,
                                                                  expected):
    done = run_cli_here("train", flag, value, "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and expected in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value, expected", [
    ("likelihood", "cauchy", "likelihood 'cauchy' is none of gaussian, student-t"),
    ("outlying", float("nan"), "outlying nan is not a finite number"),
])
def test_a_bad_likelihood_or_outlying_from_python_is_refused_in_one_line(field, value,
                                                                         expected):
    from serving.core.rows import InputError
    from training.config import TrainConfig
    from training.sizing import choose_sizes

    with pytest.raises(InputError, match=expected):
        choose_sizes(TrainConfig(**{field: value}), 1000, 10)
