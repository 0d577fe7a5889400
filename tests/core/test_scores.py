"""The serving score maths against a direct float64 recomputation from the two graphs."""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm, t

from serving.core.scores import STUDENT_T_NU, calibrate, percentile


def direct_scores(runtime, x, seed, k):
    """Per row and sample, from the graphs' outputs, with scipy's densities, in float64."""
    eps = runtime.noise(seed, k, 0).rows(0, len(x))  # (K, B, D)
    mu, logvar, z = runtime.graphs.encode(x, eps)
    x_mean, x_logvar = runtime.graphs.decode(z)
    mu, logvar, z, x_mean, x_logvar = (a.astype(np.float64) for a in (mu, logvar, z, x_mean,
                                                                         x_logvar))
    sigma = np.exp(0.5 * logvar)
    scale = np.exp(0.5 * x_logvar)  # the bundle's likelihood: Student's t by default
    log_px_j = (t.logpdf(x, STUDENT_T_NU, loc=x_mean, scale=scale) if runtime.graphs.student_t
                else norm.logpdf(x, loc=x_mean, scale=scale))  # (K, B, F)
    log_px = log_px_j.sum(-1)
    log_pz = norm.logpdf(z).sum(-1)
    log_qz = norm.logpdf(z, loc=mu, scale=sigma).sum(-1)
    score = -(logsumexp(log_px + log_pz - log_qz, axis=0) - np.log(k))
    kl = np.sum(-np.log(sigma) + (sigma**2 + mu**2) / 2 - 0.5, axis=-1)
    return score, -log_px.mean(0), kl, -log_px_j.mean(0)


def test_scores_equal_a_direct_recomputation(runtime, digits_x):
    x = digits_x[:300]
    for k in (1, 16, 64):
        scored = runtime.score(x, runtime.noise(11, k), explain=True)
        score, recon, kl, feature = direct_scores(runtime, x, 11, k)
        np.testing.assert_allclose(scored.score, score, rtol=2e-5, atol=1e-3)
        np.testing.assert_allclose(scored.recon_nll, recon, rtol=2e-5, atol=1e-3)
        np.testing.assert_allclose(scored.kl, kl, rtol=2e-5, atol=1e-4)
        np.testing.assert_allclose(scored.feature_nll, feature, rtol=2e-5, atol=1e-3)
        assert scored.score.dtype == np.float32
    np.testing.assert_allclose(scored.feature_nll.sum(1), scored.recon_nll, rtol=1e-5)


def test_one_sample_score_is_the_negative_elbo(runtime, digits_x):
    x = digits_x[:100]
    scored = runtime.score(x, runtime.noise(2, 1))
    eps = runtime.noise(2, 1, 0).rows(0, len(x))
    mu, logvar, z = runtime.graphs.encode(x, eps)
    # -ELBO = recon_nll + log q(z|x) - log p(z), estimated with the same single z
    log_q_minus_log_p = 0.5 * ((z[0] ** 2).sum(1) - (eps[0] ** 2).sum(1) - logvar.sum(1))
    np.testing.assert_allclose(scored.score, scored.recon_nll + log_q_minus_log_p, rtol=1e-5)


def test_more_samples_tighten_the_bound_on_average(runtime, digits_x):
    scores = [runtime.score(digits_x, runtime.noise(0, k)).score.mean() for k in (1, 16, 256)]
    assert scores[0] > scores[1] > scores[2]  # IWAE: the bound tightens with K


def test_percentile_and_anomaly_flags(runtime, digits_x):
    scored = runtime.score(digits_x, runtime.noise(0, 16))
    assert np.all((scored.percentile >= 0) & (scored.percentile <= 100))
    order = np.argsort(scored.score)
    assert np.all(np.diff(scored.percentile[order]) >= 0)
    np.testing.assert_array_equal(scored.is_anomaly, scored.score > runtime.threshold)
    quantiles, threshold = calibrate(np.arange(1001.0), 0.01)
    assert threshold == 990.0 and quantiles[500] == 500.0
    np.testing.assert_allclose(percentile(np.array([-5.0, 250.0, 2000.0]), np.array(quantiles)),
                               [0.0, 25.0, 100.0])


def test_a_row_scores_the_same_alone_and_in_a_batch(runtime, digits_x):
    """Bit for bit (docs/contract.md): no term of a row may depend on how many rows came with it."""
    whole = runtime.score(digits_x, runtime.noise(9, 16), explain=True)
    spans = [(i, i + 1) for i in range(300)] + [(1020, 1030), (1500, 1797)]
    for start, stop in spans:
        part = runtime.score(digits_x[start:stop], runtime.noise(9, 16, start), explain=True)
        for term in ("score", "recon_nll", "kl", "feature_nll"):
            np.testing.assert_array_equal(getattr(part, term), getattr(whole, term)[start:stop],
                                          err_msg=f"{term} of rows {start}..{stop - 1}")


def test_large_requests_are_chunked_without_changing_answers(runtime, digits_x):
    from serving.core.threads import SAMPLE_ROWS

    k = 256  # SAMPLE_ROWS // k rows per onnxruntime call: the 1797 rows take several
    assert len(digits_x) > SAMPLE_ROWS // k
    whole = runtime.score(digits_x, runtime.noise(4, k), explain=True, with_latent=True)
    assert whole.score.shape == whole.percentile.shape == (1797,)
    assert whole.feature_nll.shape == (1797, 64) and whole.mu.shape == (1797, 4)
    for start, stop in [(0, 3), (250, 260), (1790, 1797)]:
        part = runtime.score(digits_x[start:stop], runtime.noise(4, k, start), explain=True)
        np.testing.assert_array_equal(part.score, whole.score[start:stop])
        np.testing.assert_array_equal(part.feature_nll, whole.feature_nll[start:stop])


def test_chunks_shared_among_threads_give_the_same_answers(bundle_dir, digits_x):
    """Several threads score chunks side by side; small requests are split evenly among
    them. Neither changes a bit of any row's answer or imputation."""
    from serving.core.threads import SPLIT_ROWS, chunk_bounds
    from serving.store import load_runtime

    assert chunk_bounds(1, 16, 2) == [(0, 1)]
    assert chunk_bounds(SPLIT_ROWS // 16, 16, 2) == [(0, 32), (32, 64)]
    assert chunk_bounds(SPLIT_ROWS // 16 - 1, 16, 2) == [(0, 63)]
    assert chunk_bounds(1797, 16, 1) == [(0, 512), (512, 1024), (1024, 1536), (1536, 1797)]
    one, three = load_runtime(bundle_dir, threads=1), load_runtime(bundle_dir, threads=3)
    for rows in (digits_x[:1], digits_x[:100], digits_x):
        a, b = (r.score(rows, r.noise(2, 16), explain=True) for r in (one, three))
        for term in ("score", "recon_nll", "kl", "feature_nll", "percentile"):
            np.testing.assert_array_equal(getattr(a, term), getattr(b, term))
    holes = digits_x.copy()
    holes[::3, 20:30] = np.nan
    for draws in (0, 2):  # imputation is chunked the same way
        np.testing.assert_array_equal(one.impute(holes, 16, 5, draws),
                                      three.impute(holes, 16, 5, draws))


@pytest.mark.parametrize("value", [1e19, float(2**64), 3e38])
def test_a_huge_finite_cell_is_flagged_with_a_number(runtime, digits_x, value):
    """float32 maths overflows on such a row; NaN would compare false with the threshold and
    call it normal. The score saturates at float32's largest value instead."""
    x = digits_x[:3].copy()
    x[1, 10] = value
    scored = runtime.score(x, runtime.noise(0, 16))
    assert np.isfinite(scored.score).all() and np.isfinite(scored.recon_nll).all()
    assert scored.score[1] > runtime.threshold and scored.is_anomaly[1]
    assert scored.percentile[1] == 100.0
    if value > 1e30:  # its square overflows float32: the score saturates
        assert scored.score[1] == np.finfo(np.float32).max
    alone = runtime.score(x[:1], runtime.noise(0, 16))
    assert scored.score[0] == alone.score[0]  # others untouched
