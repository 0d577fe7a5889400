"""The random-draw rule of docs/contract.md: all noise comes from numpy, outside the graphs.

Rows are numbered from 0 within a request (within a file, by their position in the file) and
grouped in blocks of 1024; block b draws from `numpy.random.default_rng([seed, b])`. A row's
noise therefore depends only on (seed, position), never on how rows are batched or chunked.
"""

import secrets
from dataclasses import dataclass
from typing import Protocol

import numpy as np

BLOCK = 1024
MAX_SEED = 2**63 - 1  # one seed range for every surface
DEFAULT_SAMPLES = 16  # K, the samples of z per row, wherever a caller does not choose it


def draw(seed: int, start: int, stop: int, shape: tuple, stream: int | None = None,
         uniform: bool = False, gamma: float | None = None) -> np.ndarray:
    """Noise for rows start..stop-1, each of the given shape, as float32: standard normal,
    uniform on [0, 1), or with gamma a standard gamma of that shape parameter. A stream other
    than None draws from default_rng([seed, stream, b]), apart from eps (imputation's draws:
    serving.core.impute)."""
    parts = []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
        rng = np.random.default_rng([seed, b] if stream is None else [seed, stream, b])
        size = (hi - b * BLOCK, *shape)
        block = rng.random(size, dtype=np.float32) if uniform else \
            rng.standard_gamma(gamma, size, dtype=np.float32) if gamma is not None else \
            rng.standard_normal(size, dtype=np.float32)
        parts.append(block[lo - b * BLOCK:])
    return np.concatenate(parts)


def draw_eps(seed: int, start: int, stop: int, n_samples: int, latent_dim: int) -> np.ndarray:
    """The encoder's `eps` input for rows start..stop-1: (K, B, D), C-contiguous."""
    eps = draw(seed, start, stop, (n_samples, latent_dim))  # (B, K, D)
    return np.ascontiguousarray(eps.transpose(1, 0, 2))  # (K, B, D)


def draw_latent(seed: int, n: int, latent_dim: int, temperature: float = 1.0) -> np.ndarray:
    """Latent codes for `sample`: z = temperature * draw(seed, 0, n, (latent_dim,))."""
    return np.float32(temperature) * draw(seed, 0, n, (latent_dim,))


def new_seed() -> int:
    """A fresh seed for a request that gave none; it is returned so the answer can be replayed."""
    return secrets.randbelow(2**32)


def seed_or_new(seed: int | None) -> int:
    """The caller's seed, or a fresh one when it gave none."""
    return new_seed() if seed is None else seed


class Noise(Protocol):
    """The encoder's eps for the rows of one batch, handed out a slice of rows at a time."""

    n_samples: int

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """eps of rows lo..hi-1 of the batch: (K, hi - lo, D), C-contiguous."""
        ...


@dataclass(frozen=True)
class SeededNoise:
    """The contract's noise for rows numbered start, start+1, ... (their positions fix it)."""

    seed: int
    n_samples: int
    latent_dim: int
    start: int = 0

    def rows(self, lo: int, hi: int) -> np.ndarray:
        return draw_eps(self.seed, self.start + lo, self.start + hi, self.n_samples,
                        self.latent_dim)


@dataclass(frozen=True)
class DrawnNoise:
    """Noise drawn already (K, B, D): rows merged from several requests carry their own."""

    eps: np.ndarray

    @property
    def n_samples(self) -> int:
        return self.eps.shape[0]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        return np.ascontiguousarray(self.eps[:, lo:hi])
