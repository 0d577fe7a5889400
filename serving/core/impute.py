"""Rows from the decoder's outputs: expected rows (reconstruct, sample) and imputation of
missing cells with the importance weights of the score (MIWAE, Mattei & Frellsen 2019).

- Expected rows: a numeric cell is the decoder's mean averaged over the K samples of z; a
  categorical cell is the level with the highest probability averaged over them, with that
  probability beside it.
- Imputation: with self-normalized weights w_k ∝ p(x_obs|z_k) p(z_k) / q(z_k|x_obs), a
  missing numeric cell is Σ_k w_k E[x_j|z_k] and a missing categorical cell the level of highest
  Σ_k w_k p(level|z_k). Observed cells are returned as given.
- Multiple imputations (draws > 0): each draw picks a sample k with probability w_k (sampling
  importance resampling), then draws each missing cell from p(x_j|z_k) (a Student-t numeric
  cell as a normal over the root of a chi-square's share of ν). The uniforms, normals and
  (Student-t) gammas come from the contract's rule (serving.core.noise.draw) on streams of
  their own, so a row's draws depend only on (seed, its position).
"""

import numpy as np

from serving.core.noise import draw
from serving.core.scores import STUDENT_T_NU

UNIFORM_STREAM, NORMAL_STREAM, CHI2_STREAM = 1, 2, 3


def _probabilities(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    p = np.exp(logits - top)
    return p / p.sum(axis=-1, keepdims=True)


def _blocks(schema):
    offset = 0
    for j, n_levels in zip(schema.categorical_index, schema.level_counts):
        yield j, slice(offset, offset + n_levels)
        offset += n_levels


def expected_rows(decoded: tuple[np.ndarray, ...], schema) -> tuple[np.ndarray, np.ndarray | None]:
    """decoded over (K, B, ...) -> rows (B, F) in the schema's matrix (a categorical cell holds
    its level's index) and, with categorical columns, (B, F) probabilities of those levels
    (NaN in numeric columns); None without categorical columns."""
    x_mean = decoded[0].mean(axis=0)
    if schema is None or schema.all_numeric:
        return x_mean, None
    rows = np.full((x_mean.shape[0], len(schema.columns)), np.nan, np.float32)
    chance = np.full_like(rows, np.nan)
    rows[:, schema.numeric_index] = x_mean
    for j, block in _blocks(schema):
        p = _probabilities(decoded[2][..., block]).mean(axis=0)  # (B, L)
        rows[:, j] = p.argmax(axis=1)
        chance[:, j] = p.max(axis=1)
    return rows, chance


def _weights(log_w: np.ndarray) -> np.ndarray:
    w = np.exp(log_w - log_w.max(axis=0))
    return w / w.sum(axis=0)  # (K, B)


def fill_expected(x: np.ndarray, decoded: tuple[np.ndarray, ...], log_w: np.ndarray,
                  schema) -> np.ndarray:
    w = _weights(log_w)[..., None]  # (K, B, 1)
    full = np.empty_like(x)
    numeric = schema.numeric_index
    full[:, numeric] = (w * decoded[0]).sum(axis=0)
    for j, block in _blocks(schema):
        full[:, j] = (w * _probabilities(decoded[2][..., block])).sum(axis=0).argmax(axis=1)
    return np.where(np.isnan(x), full, x).astype(np.float32)


def draw_imputations(x: np.ndarray, decoded: tuple[np.ndarray, ...], log_w: np.ndarray,
                     schema, seed: int, draws: int, start: int = 0,
                     student_t: bool = False) -> np.ndarray:
    b, f = x.shape
    uniform = draw(seed, start, start + b, (draws, f + 1), UNIFORM_STREAM, uniform=True)
    normal = draw(seed, start, start + b, (draws, f), NORMAL_STREAM)  # (B, draws, F)
    if student_t:  # t = normal / sqrt(chi²_ν / ν), chi²_ν = 2 · Gamma(ν / 2)
        half_chi2 = draw(seed, start, start + b, (draws, f), CHI2_STREAM,
                         gamma=STUDENT_T_NU / 2)
        normal *= np.sqrt(np.float32(STUDENT_T_NU / 2) / half_chi2)
    cumulative = np.cumsum(_weights(log_w).T, axis=1)  # (B, K)
    rows = np.arange(b)
    out = np.repeat(x[None], draws, axis=0)
    numeric = schema.numeric_index
    for d in range(draws):
        k = _pick(cumulative, uniform[:, d, 0])  # (B,)
        mean, logvar = decoded[0][k, rows], decoded[1][k, rows]
        cells = np.empty_like(x)
        cells[:, numeric] = mean + np.exp(0.5 * logvar) * normal[:, d][:, numeric]
        for j, block in _blocks(schema):
            p = _probabilities(decoded[2][k, rows][:, block])
            cells[:, j] = _pick(np.cumsum(p, axis=1), uniform[:, d, 1 + j])
        out[d] = np.where(np.isnan(x), cells, x)
    return out.astype(np.float32)


def _pick(cumulative: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The index each row's uniform falls at in its cumulative probabilities."""
    index = (cumulative < u[:, None] * cumulative[:, -1:]).sum(axis=1)
    return np.minimum(index, cumulative.shape[1] - 1)

