"""ALTBI (Cho, Hwang, Bak and Kim 2024, arXiv:2408.09791, "Adaptive Loss Truncation with Batch
Increment") on this project's VAE, as its abstract describes it: mini-batches that grow as
training goes on, each batch's worst losses left out of its step (a share of that batch, so the
threshold adapts: training.objective.trimmed_mean's fixed share), and an ensemble over the last
updates. The figures the paper tunes (start size, growth, truncated share, length) were not at
hand here: these defaults are a reading, said in the recipe's name, not the authors' settings.

    steps         optimizer steps in all (no early stopping: the inlier-memorization effect is
                  the point, so the run stops early by design)
    first, growth the batch at step t: min(first * growth**t, rows)
    truncated     the share of each batch's rows, the worst by loss, left out of its step
    snapshots     the models of the last `snapshots` * `every` steps, one every `every` steps,
                  scored as one mixture (log-mean-exp of their importance-weighted
                  likelihoods), as bench/levers.py scores members
    samples       the importance samples of the training loss (the IWAE bound, as ODIM and
                  ALTBI train)
"""

import math

import numpy as np

DEFAULTS = {"steps": 200, "first": 128, "growth": 1.03, "truncated": 0.08, "snapshots": 5,
            "every": 8, "samples": 5, "learning_rate": 1e-3}


def snapshot_scores(fit: np.ndarray, rows: np.ndarray, seed: int, settings: dict) -> np.ndarray:
    """Each snapshot's scores of rows (snapshots, rows), for a model trained on fit with the
    rule's sizes (training.sizing) and fit's normalization (training.data); each step's loss
    is the rows' negative IWAE bound."""
    import torch

    from bench.protocols import iwae_score, log_weights
    from training.config import TrainConfig
    from training.data import fit_normalization
    from training.model import VAE
    from training.objective import trimmed_mean
    from training.sizing import choose_sizes

    s = {**DEFAULTS, **settings}
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    config, _ = choose_sizes(TrainConfig(data="in memory", seed=seed), len(fit), fit.shape[1])
    mean, std = fit_normalization(fit)
    model = VAE(fit.shape[1], config, torch.from_numpy(mean), torch.from_numpy(std))
    optimizer = torch.optim.Adam(model.parameters(), lr=s["learning_rate"])
    x, generator = torch.from_numpy(fit), torch.Generator().manual_seed(seed)
    kept = []
    for step in range(s["steps"]):
        size = min(int(s["first"] * s["growth"] ** step), len(fit))
        batch = x[torch.randperm(len(fit), generator=generator)[:size]]
        eps = torch.randn(s["samples"], size, config.latent_dim, generator=generator)
        loss = math.log(s["samples"]) - torch.logsumexp(log_weights(model, batch, eps), 0)
        optimizer.zero_grad(set_to_none=True)
        trimmed_mean(loss, s["truncated"]).backward()
        optimizer.step()
        left = s["steps"] - 1 - step
        if left < s["snapshots"] * s["every"] and left % s["every"] == 0:
            kept.append(iwae_score(model, rows))
    return np.stack(kept)
