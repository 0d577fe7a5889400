"""Anomaly-detection quality of the exported VAE (`vae train` defaults → `vae export` →
onnxruntime) against its peers, on the clean-training protocol, several seeds.

    .venv/bin/python -m bench.quality [--seeds 3] [--out bench/results]

Digits: each class held out in turn as the anomaly; train on 70% of the other nine classes,
test on the remaining 30% plus the held-out class. WDBC: benign rows are normal; train on 70%
of them, test on the other 30% plus malignant rows drawn to about 5% of the test set (several
draws per seed). Every method is fitted on the same rows and scores the same rows, twice, to
measure how much its scores move when nothing changes.
"""


import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import average_precision_score, roc_auc_score

from bench import tasks
from bench.common import seeded_main
from bench.detectors import PEERS, OurVAE, Peer

VAE_K = (1, 16, 256)
VAE_METHODS = [*(f"VAE score, K = {k}" for k in VAE_K), "VAE recon_nll, K = 16",
               "VAE --no-sampling"]
METHODS = [*VAE_METHODS, *PEERS]
WDBC_DRAWS, WDBC_ANOMALY_SHARE = 5, 0.05


def score_pool(x_train: np.ndarray, pool: np.ndarray, seed: int, vae_options: dict) -> dict:
    """Each method's scores of the pool rows, twice over: {method: (first, second)}, and, for
    the VAE, the scores under another noise seed."""
    scores, other_seed = {}, {}
    vae = OurVAE(seed=seed, options=vae_options).fit(x_train)
    for k in VAE_K:
        first, second = (vae.scored(pool, k, seed=0) for _ in range(2))
        other = vae.scored(pool, k, seed=1)
        scores[f"VAE score, K = {k}"] = (first.score, second.score)
        other_seed[f"VAE score, K = {k}"] = other.score
        if k == 16:
            scores["VAE recon_nll, K = 16"] = (first.recon_nll, second.recon_nll)
            other_seed["VAE recon_nll, K = 16"] = other.recon_nll
    plain = OurVAE(sampling=False, seed=seed, options=vae_options).fit(x_train)
    scores["VAE --no-sampling"] = tuple(plain.scored(pool, 1, seed=0).score for _ in range(2))
    for name, make in PEERS.items():
        detector = Peer(make, seed).fit(x_train)
        scores[name] = (detector.score(pool), detector.score(pool))
    return {"scores": scores, "other_seed": other_seed}


def spread(first: np.ndarray, second: np.ndarray) -> float:
    """The largest change of a row's score between two scorings, in units of the scores' std."""
    return float(np.abs(first - second).max() / max(np.std(first), 1e-12))


def measure(pool_scores: dict, anomalous: np.ndarray, subsets: list[np.ndarray]) -> dict:
    """AUROC and average precision of each method on each subset of the pool (mean over the
    subsets), and its spread."""
    out = {}
    for name, (first, second) in pool_scores["scores"].items():
        aurocs = [roc_auc_score(anomalous[s], first[s]) for s in subsets]
        aps = [average_precision_score(anomalous[s], first[s]) for s in subsets]
        out[name] = {"auroc": float(np.mean(aurocs)), "ap": float(np.mean(aps)),
                     "spread": spread(first, second)}
        if name in pool_scores["other_seed"]:
            out[name]["spread_other_seed"] = spread(first, pool_scores["other_seed"][name])
    return out


def digits(seeds: int) -> dict:
    """{seed: {held-out class: {method: figures}}}."""
    results = {}
    for seed in range(seeds):
        results[seed] = {}
        for held_out in range(10):
            task = tasks.hold_one_out(seed, held_out)
            pool = score_pool(task.fit, task.score, seed, {})
            results[seed][held_out] = measure(pool, task.anomalous, [np.arange(len(task.score))])
            print(f"digits seed {seed} class {held_out}: VAE K=16 AUROC "
                  f"{results[seed][held_out]['VAE score, K = 16']['auroc']:.3f}", flush=True)
    return results


def wdbc(seeds: int) -> dict:
    """{seed: {method: figures, averaged over the malignant draws}}."""
    bunch = load_breast_cancer()
    x, benign = bunch.data.astype(np.float32), bunch.target == 1
    malignant = np.flatnonzero(~benign)
    results = {}
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 100])
        order = rng.permutation(np.flatnonzero(benign))
        n_train = round(0.7 * len(order))
        train, test_normal = order[:n_train], order[n_train:]
        pool_rows = np.concatenate([test_normal, malignant])
        anomalous = np.arange(len(pool_rows)) >= len(test_normal)
        n_anomalies = round(len(test_normal) * WDBC_ANOMALY_SHARE / (1 - WDBC_ANOMALY_SHARE))
        subsets = [np.concatenate([np.arange(len(test_normal)), len(test_normal)
                                   + rng.choice(len(malignant), n_anomalies, replace=False)])
                   for _ in range(WDBC_DRAWS)]
        pool = score_pool(x[train], x[pool_rows], seed, {})
        results[seed] = measure(pool, anomalous, subsets)
        results[seed]["_test"] = {"normal": len(test_normal), "anomalous": n_anomalies}
        print(f"wdbc seed {seed}: VAE K=16 AUROC {results[seed]['VAE score, K = 16']['auroc']:.3f}",
              flush=True)
    return results


def run(seeds: int = 3) -> dict:
    return {"seeds": seeds, "digits": digits(seeds), "wdbc": wdbc(seeds)}


def main() -> None:
    seeded_main(__doc__, "quality", lambda seeds, out: run(seeds))


if __name__ == "__main__":
    main()
