"""The robustness levers that `vae train` has no option for, so that bench/develop.py can
measure them beside the recipes it can train (the report shows every one it tried):

    members: M        an ensemble of M models (seeds s, s + 1000, ...) scored as one mixture:
                      -log mean_m p_m(x), the log-mean-exp of the members' IWAE likelihoods
    bag: n            each member fitted on its own n random rows (IsolationForest's subsample)
    transform: T      a per-column input transform fitted on the training rows: "rank-gauss"
                      (quantiles to a normal) or "log" (log1p of the columns skewed past 2)
    steps: N          training stopped after about N optimizer steps, no early stopping: an
                      under-fitted model has not memorised its anomalies yet (ODIM)
    steps: "bimodal"  the length among LENGTHS whose training rows' scores are the most
                      bimodal (a two-component Gaussian mixture's separation): ODIM's choice
                      without labels

Every other option is the TrainConfig's. A model is scored as bench/protocols.py scores one.
"""

import math
import time
from pathlib import Path

import numpy as np

KEYS = ("members", "bag", "transform", "steps")
LENGTHS = (150, 300, 600, 1200, None)  # None: the rule's length, with early stopping
SKEWED = 2.0


def fit_transform(kind: str, fit: np.ndarray):
    """The transform of the fit rows' columns, as a function of rows."""
    if kind == "rank-gauss":
        from sklearn.preprocessing import QuantileTransformer

        qt = QuantileTransformer(output_distribution="normal", random_state=0,
                                 n_quantiles=min(1000, len(fit))).fit(fit)
        return lambda x: qt.transform(x).astype(np.float32)
    if kind == "log":
        low = fit.min(0)
        centred = fit - fit.mean(0)
        skew = (centred**3).mean(0) / (fit.std(0) ** 3 + 1e-12)
        use = skew > SKEWED
        return lambda x: np.where(use, np.log1p(np.maximum(x - low, 0)), x).astype(np.float32)
    raise ValueError(f"transform {kind!r} is neither 'rank-gauss' nor 'log'")


def _length(options: dict, n_rows: int, n_features: int, steps: int | None) -> dict:
    """TrainConfig options that stop after about `steps` optimizer steps (None: the rule's)."""
    from training.sizing import rule

    if steps is None:
        return options
    n_train = round(n_rows * 0.8)  # TrainConfig.val_fraction
    batch = options.get("batch_size") or rule(n_train, n_features)["batch_size"]
    epochs = max(2, -(-steps // -(-n_train // batch)))
    return {**options, "epochs": epochs, "warmup_epochs": max(1, epochs // 3),
            "patience": epochs}


def separation(scores: np.ndarray) -> float:
    """How bimodal scores are: the distance between a two-component Gaussian mixture's means in
    units of its components' pooled standard deviation (the 1% tails clipped)."""
    from sklearn.mixture import GaussianMixture

    low, high = np.percentile(scores, [1, 99])
    s = np.clip(scores, low, high).reshape(-1, 1)
    gm = GaussianMixture(2, random_state=0).fit(s)
    return float(abs(np.diff(gm.means_.ravel())[0]) / math.sqrt(gm.covariances_.mean()))


def _member(fit: np.ndarray, rows: np.ndarray, options: dict, seed: int, workdir: Path):
    """(scores of rows, scores of fit) of one model trained on fit."""
    import torch

    from bench.protocols import iwae_score
    from training.config import TrainConfig
    from training.train import load_run, train

    np.save(workdir / "fit.npy", fit)
    train(TrainConfig(data=str(workdir / "fit.npy"), seed=seed, **options), workdir / "run",
          progress=False, threads=1)
    torch.set_num_threads(1)
    model, _ = load_run(workdir / "run")
    return iwae_score(model, rows), iwae_score(model, fit)


def scores(task, options: dict, workdir: Path) -> tuple[np.ndarray, float]:
    """The task's scores under a recipe with levers, and its training seconds."""
    options = dict(options)
    members, bag = options.pop("members", 1), options.pop("bag", None)
    transform, steps = options.pop("transform", None), options.pop("steps", None)
    fit, rows = task.fit, task.score
    if transform:
        apply = fit_transform(transform, fit)
        fit, rows = apply(fit), apply(rows)
    started = time.perf_counter()
    per_member = []
    for m in range(members):
        rng = np.random.default_rng([task.seed, m])
        own = fit[rng.choice(len(fit), bag, replace=False)] if bag and bag < len(fit) else fit
        lengths = LENGTHS if steps == "bimodal" else (steps,)
        best = None
        for i, length in enumerate(lengths):
            run_dir = workdir / f"m{m}-{i}"
            run_dir.mkdir(parents=True)
            got = _member(own, rows, _length(options, len(own), own.shape[1], length),
                          task.seed + 1000 * m, run_dir)
            sep = separation(got[1]) if len(lengths) > 1 else 0.0
            if best is None or sep > best[0]:
                best = (sep, got[0])
        per_member.append(best[1])
    log_p = -np.stack(per_member)  # (M, rows): each member's log-likelihood estimate
    mixture = np.logaddexp.reduce(log_p, axis=0) - math.log(members)
    return -mixture, time.perf_counter() - started
