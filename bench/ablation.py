"""The sampling ablation: why z = mu + sigma·eps rather than a deterministic code?

    .venv/bin/python -m bench.ablation [--seeds 3] [--out bench/results]

Three models trained alike on 70% of digits (the same rows, seed, network and schedule):
the VAE; `--no-sampling` (z = mu, penalty ½‖mu‖² in place of the KL); and a plain
autoencoder (z = mu, no penalty). On the other 30%: reconstruction error, the held-out
IWAE bound (K = 1000, the VAE only: the others define no density). Then 1000 samples decoded
from z ~ N(0, I): a digits classifier trained on real rows judges them (mean confidence, entropy
of the predicted classes), and their Fréchet distance to the test rows is measured in a PCA
feature space. Last, the latent space: how many units are active, and how much of N(0, I) lies
near the codes of real rows.
"""

from pathlib import Path

import numpy as np
from scipy import linalg
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

from bench.common import seeded_main
from bench.detectors import OurVAE

MODELS = {"VAE": {"sampling": True, "beta": 1.0},
          "--no-sampling": {"sampling": False, "beta": 1.0},
          "plain autoencoder": {"sampling": False, "beta": 0.0}}
N_SAMPLES, IWAE_K, PCA_DIMS, ACTIVE = 1000, 1000, 20, 0.01


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


class Judge:
    """What real digits look like: a classifier and a PCA feature space, fitted on real rows."""

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, seed: int):
        self.classifier = LogisticRegression(max_iter=5000).fit(x_train / 16, y_train)
        self.accuracy = float(self.classifier.score(x_test / 16, y_test))
        self.pca = PCA(PCA_DIMS, random_state=seed).fit(x_train)
        self.test_features = self.pca.transform(x_test)

    def __call__(self, rows: np.ndarray) -> dict:
        """Samples are judged in the pixel range 0–16 (a linear classifier grows surer the
        further a pixel strays), and how far outside it they stray is reported."""
        outside = float(((rows < -0.5) | (rows > 16.5)).mean())
        rows = np.clip(rows, 0, 16)
        probs = self.classifier.predict_proba(rows / 16)
        share = np.bincount(probs.argmax(1), minlength=10) / len(rows)
        entropy = float(-(share[share > 0] * np.log(share[share > 0])).sum())
        return {"outside_range": outside,
                "confidence": float(probs.max(1).mean()), "class_entropy": entropy,
                "frechet_pca": frechet(self.pca.transform(rows), self.test_features)}


def latent_space(runtime, x_train: np.ndarray, x_test: np.ndarray, seed: int) -> dict:
    """Active units (Burda et al. 2015: Var_x E[z_u|x] > 0.01) and the share of N(0, I) draws
    that land near the codes of real rows: closer to a training code, in the active units, than
    95% of test codes are (the decoder ignores the inactive units)."""
    def codes(x):
        return runtime.graphs.encode(x, np.zeros((0, len(x), runtime.latent_dim), np.float32))[0]
    train, test = codes(x_train), codes(x_test)
    active = train.var(axis=0) > ACTIVE
    prior = np.random.default_rng(seed).standard_normal((N_SAMPLES, runtime.latent_dim))
    index = NearestNeighbors(n_neighbors=1).fit(train[:, active])
    near = np.quantile(index.kneighbors(test[:, active])[0], 0.95)
    covered = index.kneighbors(prior[:, active])[0][:, 0] <= near
    return {"active_units": int(active.sum()), "latent_dim": runtime.latent_dim,
            "prior_covered": float(covered.mean()),
            "code_rms": float(np.sqrt((train[:, active] ** 2).mean()))}


def one_seed(seed: int) -> tuple[dict, dict]:
    bunch = load_digits()
    x, y = bunch.data.astype(np.float32), bunch.target
    order = np.random.default_rng([seed, 200]).permutation(len(x))
    n_train = round(0.7 * len(x))
    train, test = order[:n_train], order[n_train:]
    judge = Judge(x[train], y[train], x[test], y[test], seed)
    figures = {"real rows": {**judge(x[test]), "classifier_accuracy": judge.accuracy}}
    # the floor of the Fréchet distance: real training rows against the test rows
    figures["real rows"]["frechet_pca"] = frechet(judge.pca.transform(x[train]),
                                                  judge.test_features)
    grids = {"real rows": x[test][:100]}
    for name, options in MODELS.items():
        model = OurVAE(seed=seed, **options).fit(x[train])
        runtime = model.runtime
        x_test = x[test]
        reconstruction = runtime.reconstruct(x_test, n_samples=0, seed=0)[0]
        samples, _ = runtime.sample(N_SAMPLES, seed=seed)
        figures[name] = {
            "reconstruction_mse": float(((reconstruction - x_test) ** 2).mean()),
            "neg_elbo": float(model.scored(x_test, 1, seed=0).score.mean())
            if options["sampling"] else None,
            "iwae_1000": float(model.scored(x_test, IWAE_K, seed=0).score.mean())
            if options["sampling"] else None,
            **judge(samples), **latent_space(runtime, x[train], x_test, seed),
            "epochs": model.metrics["epochs"],
        }
        grids[name] = samples[:100]
        print(f"ablation seed {seed} {name}: {figures[name]}", flush=True)
    return figures, grids


def sample_grid(grids: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6))
    for ax, (name, rows) in zip(axes, grids.items()):
        tiles = np.clip(rows, 0, 16).reshape(10, 10, 8, 8).transpose(0, 2, 1, 3).reshape(80, 80)
        ax.imshow(tiles, cmap="gray_r", vmin=0, vmax=16)
        ax.set_title(name if name == "real rows" else f"{name}\nz ~ N(0, I)", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(seeds: int = 3, plots: Path | None = None) -> dict:
    results = {}
    for seed in range(seeds):
        results[seed], grids = one_seed(seed)
        if seed == 0 and plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            sample_grid(grids, plots / "samples.png")
    return results


def main() -> None:
    seeded_main(__doc__, "ablation", lambda seeds, out: run(seeds, plots=out))


if __name__ == "__main__":
    main()
