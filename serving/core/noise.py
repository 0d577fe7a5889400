"""The random-draw rule of SPEC.md: all noise comes from numpy, outside the graphs.

Rows are numbered from 0 within a request (within a file, by their position in the file) and
grouped in blocks of 1024; block b draws from `numpy.random.default_rng([seed, b])`. A row's
noise therefore depends only on (seed, position), never on how rows are batched or chunked.
"""

import secrets

import numpy as np

BLOCK = 1024
MAX_SEED = 2**63 - 1


def draw(seed: int, start: int, stop: int, shape: tuple) -> np.ndarray:
    """Noise for rows start..stop-1, each of the given shape, as float32."""
    parts = []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
        block = np.random.default_rng([seed, b]).standard_normal(
            (hi - b * BLOCK, *shape), dtype=np.float32)
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
