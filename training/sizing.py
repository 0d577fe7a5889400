"""Sizes that fit the table: what `vae train` chooses for the settings a user leaves unset.

The rule (docs/training.md), for a table of n training rows and F features:
    hidden     two layers of width clamp(4·F, 32, 256), rounded up to a power of two
    latent     clamp(F // 4, 2, 16)
    batch      clamp(n // 8, 16, 64)
    epochs     enough for about 3,000 optimizer steps (300 below 500 rows), between 30 and 300;
               above 100,000 rows an epoch is a fresh random sample of 500 batches, not every
               row, so that the run's length is a step budget (15,000 steps at least)
    batch      above 100,000 rows, 256, with the learning rate 1e-3 × sqrt(batch / 64)
    patience   a tenth of the epochs, at least 10
    contamination  auto (each batch's outlying rows left out) at every size, at 4 robust SDs;
               with --likelihood gaussian, auto at 5 robust SDs below 500 rows, else 0
    threads    1 for a network narrower than 256 units and batches under 256, else the CPUs the
               process may use that are free (the load average), at most 4
Why a small table differs: a few hundred rows cannot hold the network back from learning its
anomalies as normal before early stopping (which sees held-out rows only) ends the run. The
measurements behind each choice are in docs/training.md and bench/REPORT.md.
"""

import dataclasses
import math
import os

from serving.core.rows import InputError
from serving.core.scores import LIKELIHOODS, STUDENT_T
from training.config import AUTO, TrainConfig

SIZES = ("hidden", "latent_dim", "batch_size", "epochs", "patience", "contamination",
         "outlying", "learning_rate", "epoch_rows")
SMALL = 500  # training rows below which a table is small: fewer steps, and auto
LARGE = 100_000  # training rows above which an epoch is a sample: the length is a step budget
LARGE_BATCH, EPOCH_STEPS = 256, 500


def _clamp(value: float, low: int, high: int) -> int:
    return int(min(max(value, low), high))


def _power_of_two(value: int) -> int:
    """The least power of two ≥ value."""
    return 1 << (max(value, 1) - 1).bit_length()


def rule(n_rows: int, n_features: int, likelihood: str = STUDENT_T) -> dict:
    """The sizes of the rule above, for n training rows of F features."""
    width = _power_of_two(_clamp(4 * n_features, 32, 256))
    large = n_rows > LARGE
    batch = LARGE_BATCH if large else _clamp(n_rows // 8, 16, 64)
    small = n_rows < SMALL
    epoch_rows = EPOCH_STEPS * batch if large else 0  # 0: every row, every epoch
    steps_per_epoch = -(-(epoch_rows or n_rows) // batch)
    epochs = _clamp((300 if small else 3000) / steps_per_epoch, 30, 300)
    return {"hidden": (width, width), "latent_dim": _clamp(n_features // 4, 2, 16),
            "batch_size": batch, "epochs": epochs, "patience": max(10, epochs // 10),
            "contamination": AUTO if small or likelihood == STUDENT_T else 0.0,
            "outlying": 4.0 if likelihood == STUDENT_T else 5.0,
            "learning_rate": 1e-3 * (batch / 64) ** 0.5 if large else 1e-3,
            "epoch_rows": epoch_rows}


def choose_sizes(config: TrainConfig, n_rows: int,
                 n_features: int) -> tuple[TrainConfig, str]:
    """The config with its unset sizes filled in, and one line saying what was chosen and why."""
    chosen = {k: v for k, v in rule(n_rows, n_features, config.likelihood).items()
              if getattr(config, k) is None}
    config = dataclasses.replace(config, **chosen)
    if not (isinstance(config.beta, (int, float)) and math.isfinite(config.beta)
            and config.beta >= 0):
        raise InputError(f"beta {config.beta!r} is not a finite number ≥ 0 (1 is the ELBO)")
    share = config.contamination
    if share != AUTO and not (isinstance(share, (int, float)) and 0.0 <= share < 0.5):
        raise InputError(f"contamination {share!r} is neither {AUTO!r} nor a fraction in "
                         f"[0, 0.5)")
    if not (isinstance(config.outlying_weight, (int, float)) and 0 <= config.outlying_weight < 1):
        raise InputError(f"outlying_weight {config.outlying_weight!r} is not a weight in [0, 1) "
                         f"(0 leaves auto's outlying rows out)")
    if not (isinstance(config.outlying, (int, float)) and 0 < config.outlying < math.inf):
        raise InputError(f"outlying {config.outlying!r} is not a finite number of robust "
                         f"standard deviations > 0")
    if config.likelihood not in LIKELIHOODS:
        raise InputError(f"likelihood {config.likelihood!r} is none of {', '.join(LIKELIHOODS)}")
    if config.val_cap is not None and not (isinstance(config.val_cap, (int, float))
                                           and config.val_cap > 0):
        raise InputError(f"val_cap {config.val_cap!r} is neither None (the plain -ELBO) nor a "
                         f"number of standard deviations > 0")
    sizes = (f"hidden {','.join(map(str, config.hidden))}, latent {config.latent_dim}, "
             f"batch {config.batch_size}, at most {config.epochs} epochs, patience "
             f"{config.patience}, beta {config.beta:g}, likelihood {config.likelihood}, "
             f"contamination {config.contamination}"
             + (f" at {config.outlying:g} robust SDs" if config.contamination == AUTO else "")
             + (f", epochs of {config.epoch_rows} sampled rows, learning rate "
                f"{config.learning_rate:g}" if config.epoch_rows else ""))
    why = (f"chosen for {n_rows} training rows × {n_features} features" if chosen else "as given")
    given = [k for k in SIZES if k not in chosen]
    if chosen and given:
        why += f" ({', '.join(given)} as given)"
    return config, f"vae train: {sizes}: {why}"


def choose_threads(config: TrainConfig) -> int:
    """torch's threads for a run whose sizes are chosen (the rule above), at most the CPUs
    that are free now: on a busy machine a second thread waits for a core, and a small model
    trained 28 times slower (digits: 105 s on 2 threads, 3.7 s on one, the same weights)."""
    from serving.core.threads import container_cpus

    if max(config.hidden) < 256 and config.batch_size < LARGE_BATCH:
        return 1
    return max(1, min(4, int(container_cpus()), free_cpus()))


def free_cpus() -> int:
    """The CPUs not busy over the last minute (the load average), at least one."""
    cpus = os.cpu_count() or 1
    return max(1, cpus - round(os.getloadavg()[0]))


def trim_share(config: TrainConfig) -> float | None:
    """The share of each training batch left out of the loss, from the first epoch on:
    anomalies are the worst-fitted rows early, and once learned they no longer stand out.
    None: the outlying rows of each batch (training.objective.trimmed_mean).
    A run with a label column trains on its normal rows only: auto trims nothing there."""
    if config.contamination == AUTO:
        return 0.0 if config.label_column is not None else None
    return float(config.contamination)
