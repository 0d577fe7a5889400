"""The unsupervised and semi-supervised protocols (bench/tasks.py) on every data set: this VAE,
the training recipes it was chosen over, and the peers.

    .venv/bin/python -m bench.protocols [--seeds 3] [--out bench/results]

Digits runs each class as the anomaly once (seed 0), unsupervised only: its ten classes are
its repeats, and its semi-supervised protocol is bench/quality.py's hold-one-out. The tables
and the synthetic family run every seed. The VAE rows are trained by `vae train`'s own
function and scored with the contract's IWAE score (K = 16) in PyTorch: exporting the ~300
models would take longer than everything else here, and `vae export` checks that onnxruntime
gives the same scores (bench/quality.py measures the exported path). Two tasks run at a time,
each on one thread.
"""

import math
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from bench import tasks
from bench.common import seeded_main
from bench.detectors import PEERS, Peer

OLD_SIZES = {"hidden": (256, 256), "latent_dim": 16, "batch_size": 128, "epochs": 300,
             "patience": 30, "beta": 1.0, "contamination": 0.0, "weight_average": 0.0,
             "cell_cap": None, "val_cap": None, "integer_floor": False,
             "likelihood": "gaussian", "outlying": 5.0}
DEFAULT = "VAE (defaults)"
GAUSSIAN = "VAE, the Gaussian defaults of 02a5f47"  # auto below 500 rows only, at 5 SDs
# The recipe `vae train` uses by default (training/sizing.py's rule), then the others.
RECIPES = {
    DEFAULT: {},
    GAUSSIAN: {"likelihood": "gaussian"},
    "VAE, last weights, not averaged": {"weight_average": 0.0},
    "VAE, before: fixed sizes": {**OLD_SIZES},
    "VAE, one variance per feature": {"decoder_variance": "feature"},
}
METHODS = [*RECIPES, *PEERS]


def log_weights(model, x, eps):
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) of rows x (B, F) under noise eps (K, B, D), less
    the constants that cancel: (K, B), differentiable (the importance weights of the score)."""
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, eps)
    log_ratio = 0.5 * ((eps**2).sum(-1) - (z**2).sum(-1) + logvar.sum(-1))
    return model.log_px(x, model.decode(z)) + log_ratio


def iwae_score(model, x: np.ndarray, k: int = 16, seed: int = 0,
               eps: np.ndarray | None = None) -> np.ndarray:
    """-log mean_k p(x|z_k) p(z_k) / q(z_k|x): the score of docs/contract.md, in PyTorch, under
    noise eps (K, B, D) or, by default, K draws from torch's generator seeded by seed."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(x)
        eps = torch.randn(k, len(x), model.latent_dim,
                          generator=torch.Generator().manual_seed(seed)) \
            if eps is None else torch.from_numpy(eps)
        if not model.sampling:
            mu, _ = model.encode(x)
            log_px = model.log_px(x, model.decode(mu.expand_as(eps)))
            return (-log_px[0] + 0.5 * (mu**2).sum(-1)).double().numpy()
        w = log_weights(model, x, eps).double()
        return (-(torch.logsumexp(w, 0) - math.log(k))).numpy()


def fitted_model(fit: np.ndarray, options: dict, seed: int, workdir: Path):
    """A VAE trained by `vae train`'s own function on the rows fit, on one thread (two tasks
    share the two cores), loaded back."""
    import torch

    from training.config import TrainConfig
    from training.train import load_run, train

    np.save(workdir / "fit.npy", fit)
    train(TrainConfig(data=str(workdir / "fit.npy"), seed=seed, **options), workdir / "run",
          progress=False, threads=1)
    torch.set_num_threads(1)
    return load_run(workdir / "run")[0]


def vae_scores(task: tasks.Task, options: dict, workdir: Path) -> tuple[np.ndarray, float]:
    """Scores of the task's rows by a VAE trained on its fit rows, and the training seconds."""
    from bench import levers

    if any(key in options for key in levers.KEYS):
        return levers.scores(task, options, workdir)
    started = time.perf_counter()
    model = fitted_model(task.fit, options, task.seed, workdir)
    seconds = time.perf_counter() - started
    return iwae_score(model, task.score), seconds


def peer_scores(task: tasks.Task, name: str) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    peer = Peer(PEERS[name], task.seed).fit(task.fit)
    scores = peer.fitted_scores() if task.protocol == "unsupervised" else peer.score(task.score)
    return scores, time.perf_counter() - started


def run_task(task: tasks.Task, recipes: dict = RECIPES, peers: bool = True) -> dict:
    """{dataset, protocol, share, seed, auroc: {method: AUROC}, seconds: {method: s}}."""
    os.environ["OMP_NUM_THREADS"] = "1"
    aurocs, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="vae-protocol-") as tmp:
        for i, (name, options) in enumerate(recipes.items()):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            scores, seconds[name] = vae_scores(task, options, workdir)
            aurocs[name] = float(roc_auc_score(task.anomalous, scores))
    for name in PEERS if peers else ():
        scores, seconds[name] = peer_scores(task, name)
        aurocs[name] = float(roc_auc_score(task.anomalous, scores))
    return {"dataset": task.dataset, "protocol": task.protocol, "share": task.share,
            "seed": task.seed, "auroc": aurocs, "seconds": seconds}


def report_tasks(seeds: int) -> list[tasks.Task]:
    out = []
    for dataset in tasks.DATASETS:
        if dataset == "digits":
            draws = [(0, digit) for digit in range(10)]
        else:
            draws = [(seed, 0) for seed in range(seeds)]
        for seed, digit in draws:
            out += [tasks.unsupervised(dataset, share, seed, digit) for share in tasks.SHARES]
            if dataset != "digits":  # digits' semi-supervised protocol is bench/quality.py's
                out.append(tasks.semi_supervised(dataset, seed, digit))
    return out


def _run(task: tasks.Task) -> dict:
    result = run_task(task)
    print(f"{task.name}: VAE {result['auroc'][DEFAULT]:.3f}, IsolationForest "
          f"{result['auroc']['IsolationForest']:.3f}, ECOD {result['auroc']['ECOD']:.3f}",
          flush=True)
    return result


def run(seeds: int = 3, workers: int = 2) -> dict:
    # spawned, not forked: a child forked from a process that has run torch on two threads
    # hangs in its first parallel region (GNU OpenMP is not fork-safe); make bench did
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_run, report_tasks(seeds)))
    return {"seeds": seeds, "tasks": results}


def main() -> None:
    seeded_main(__doc__, "protocols", lambda seeds, out: run(seeds))


if __name__ == "__main__":
    main()
