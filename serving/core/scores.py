"""The score maths of docs/contract.md, vectorised over (K, B, ...) in float32.

score      = -(logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K)
             the importance-weighted bound of Burda et al. (2015), arXiv:1509.00519;
             K = 1 is the one-sample negative ELBO.
recon_nll  = -mean_k log p(x|z_k)
kl         = KL(q(z|x) || N(0, I)) in closed form (Kingma & Welling 2014, appendix B)
feature_nll= -mean_k log p(x_j|z_k), per feature; sums to recon_nll.

With a column schema, log p(x|z) is over the observed cells only (a missing cell's feature_nll
is 0): a numeric column's term is Gaussian, a categorical column's is the log-softmax of its
levels' logits at the cell's level, and the score estimates -log p(x_obs). A bundle whose
likelihood is student-t gives its numeric cells Student's t density instead (STUDENT_T_NU).
Everything is in nats and raw feature units; higher means more anomalous.
"""

import math
from dataclasses import dataclass, fields

import numpy as np

LOG_2PI = np.float32(np.log(2.0 * np.pi))
# A numeric cell's density given z (TrainConfig.likelihood; the manifest's `likelihood`): the
# Gaussian, or Student's t with STUDENT_T_NU degrees of freedom and the decoder's sd as scale:
# log p = STUDENT_T_LOG_NORM - ½ log σ² - (ν + 1)/2 · log(1 + r²/ν), r = (x - mean)/σ.
STUDENT_T = "student-t"
LIKELIHOODS = ("gaussian", STUDENT_T)
STUDENT_T_NU = 5.0


def student_t_log_norm(nu: float) -> float:
    """log of Student's t density's constant with nu degrees of freedom (unit scale)."""
    return math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)


STUDENT_T_LOG_NORM = student_t_log_norm(STUDENT_T_NU)
QUANTILE_LEVELS = np.linspace(0.0, 100.0, 1001)  # percent; calibration stores a score at each


@dataclass
class Scores:
    score: np.ndarray  # (B,)
    recon_nll: np.ndarray  # (B,)
    kl: np.ndarray  # (B,)
    feature_nll: np.ndarray | None = None  # (B, F) when explained

    @classmethod
    def concat(cls, parts: list["Scores"]) -> "Scores":
        """The scores of consecutive batches as one."""
        if len(parts) == 1:
            return parts[0]
        return cls(**{f.name: None if getattr(parts[0], f.name) is None
                      else np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})


def score_terms(x: np.ndarray, mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray,
                z: np.ndarray, decoded: tuple[np.ndarray, ...], sampling: bool = True,
                explain: bool = False, schema=None, student_t: bool = False) -> Scores:
    """Per-row scores from the graphs' outputs.

    x (B, F); mu, logvar (B, D); eps, z (K, B, D); decoded: x_mean, x_logvar (K, B, F_numeric)
    and, with categorical columns, logits (K, B, L). `schema` (serving.core.schema.Schema)
    is None for a bundle made before schemas: all numeric, every cell observed, Gaussian.
    student_t: numeric cells have the Student-t density (the manifest's likelihood).
    For a `--no-sampling` model (z = mu and logvar = 0) the score is recon_nll + ½‖mu‖², the
    objective it was trained on; its closed-form `kl` is then exactly that penalty.
    """
    if schema is None:
        cells, log_px = _gaussian_terms(x, *decoded[:2])
    else:
        cells = _cell_terms(x, decoded, schema, student_t)
        log_px = -cells.sum(axis=2)  # (K, B)
    recon_nll = -_mean_over_samples(log_px)  # (B,)
    kl = 0.5 * (np.square(mu) + np.exp(logvar) - 1.0 - logvar).sum(axis=1)  # (B,)
    if sampling:
        log_w = log_px + _log_ratio(eps, z, logvar)  # (K, B)
        top = log_w.max(axis=0)  # (B,)
        log_mean_w = top + np.log(_mean_over_samples(np.exp(log_w - top)))
        score = -log_mean_w
    else:
        score = recon_nll + kl
    feature_nll = None
    if explain:
        feature_nll = _mean_over_samples(cells)
        if schema is None:  # cells holds twice the nll, without log 2π
            feature_nll = 0.5 * (feature_nll + LOG_2PI)  # (B, F)
    return Scores(score=score.astype(np.float32, copy=False),
                  recon_nll=recon_nll.astype(np.float32, copy=False),
                  kl=kl.astype(np.float32, copy=False), feature_nll=feature_nll)


def log_weights(x: np.ndarray, mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray,
                z: np.ndarray, decoded: tuple[np.ndarray, ...], schema,
                student_t: bool = False) -> np.ndarray:
    """log p(x_obs|z_k) + log p(z_k) - log q(z_k|x) of each sample, (K, B): the importance
    weights of the score, and of imputation."""
    return -_cell_terms(x, decoded, schema, student_t).sum(axis=2) + _log_ratio(eps, z, logvar)


def _log_ratio(eps: np.ndarray, z: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """log p(z) - log q(z|x), (K, B); the log 2π terms cancel and (z - mu)/sigma is eps
    exactly."""
    return 0.5 * (np.square(eps).sum(axis=2) - np.square(z).sum(axis=2) + logvar.sum(axis=1))


def _gaussian_terms(x: np.ndarray, x_mean: np.ndarray,
                    x_logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complete numeric rows: (K, B, F) of -2 log p(x_j|z) without log 2π, and log p(x|z)."""
    # Squared error scaled by the decoder's variance, plus its log-variance: (K, B, F).
    sq = x - x_mean
    np.square(sq, out=sq)
    sq *= np.exp(-x_logvar)
    sq += x_logvar
    neg2_log_px = sq.sum(axis=2)  # (K, B), without the constant F * log 2π
    n_features = x.shape[1]
    return sq, -0.5 * (neg2_log_px + n_features * LOG_2PI)  # (K, B)


def _cell_terms(x: np.ndarray, decoded: tuple[np.ndarray, ...], schema,
                student_t: bool = False) -> np.ndarray:
    """-log p(x_j|z) of every cell, (K, B, F), 0 where the cell is missing. The common case,
    every column numeric and every cell observed, takes no mask and no copy into place
    (a third of int8 scoring's time went there); its values are the same to the bit."""
    x_mean, x_logvar = decoded[:2]
    observed = ~np.isnan(x)
    complete = bool(observed.all())
    if not complete:
        x = np.where(observed, x, np.float32(0.0))
    numeric = schema.numeric_index
    all_numeric = len(numeric) == x.shape[1]  # then numeric is 0, 1, ..., F-1
    if numeric:
        sq = (x if all_numeric else x[:, numeric]) - x_mean
        np.square(sq, out=sq)
        sq *= np.exp(-x_logvar)
        if student_t:  # (ν + 1)/2 · log(1 + r²/ν) + ½ log σ² - STUDENT_T_LOG_NORM
            sq *= np.float32(1.0 / STUDENT_T_NU)
            np.log1p(sq, out=sq)
            sq *= np.float32((STUDENT_T_NU + 1.0) / 2.0)
            sq += np.float32(0.5) * x_logvar
            sq -= np.float32(STUDENT_T_LOG_NORM)
        else:
            sq += x_logvar
            sq += LOG_2PI
            sq *= np.float32(0.5)
        if not complete:
            np.copyto(sq, np.float32(0.0), where=~observed[:, numeric])
        if all_numeric:
            return sq
    cells = np.zeros((*x_mean.shape[:2], x.shape[1]), np.float32)
    if numeric:
        cells[..., numeric] = sq
    offset = 0
    for j, n_levels in zip(schema.categorical_index, schema.level_counts):
        logits = decoded[2][..., offset:offset + n_levels]
        top = logits.max(axis=-1, keepdims=True)
        log_norm = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))  # (K, B)
        code = x[:, j].astype(np.int64)  # (B,)
        picked = np.take_along_axis(logits, np.broadcast_to(
            code[None, :, None], (*logits.shape[:2], 1)), axis=-1)[..., 0]
        cells[..., j] = np.where(observed[:, j], log_norm - picked, np.float32(0.0))
        offset += n_levels
    return cells


def _mean_over_samples(a: np.ndarray) -> np.ndarray:
    """Mean over the K samples (axis 0) of each row, added in one order whatever B is.

    numpy adds a lone row's K values pairwise (they are contiguous) but several rows' values
    one sample at a time: the last bits of a row's score would depend on its batch-mates.
    Summing each row's values as one contiguous run gives every row the same order.
    """
    return np.ascontiguousarray(np.moveaxis(a, 0, -1)).mean(axis=-1)


def percentile(score: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Share of calibration scores ≤ score, 0..100, interpolated between stored quantiles."""
    levels = np.linspace(0.0, 100.0, len(quantiles))
    return np.interp(score, quantiles, levels).astype(np.float32)


def calibrate(scores: np.ndarray, target_fpr: float) -> tuple[list[float], float]:
    """Quantiles of validation scores at QUANTILE_LEVELS, and the (1 - target_fpr) threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    quantiles = np.quantile(scores, QUANTILE_LEVELS / 100.0)
    threshold = float(np.quantile(scores, 1.0 - target_fpr))
    return [float(q) for q in quantiles], threshold
