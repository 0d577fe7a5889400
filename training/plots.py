"""Pictures of a run: loss curves, a 2-D map of validation codes, samples and reconstructions."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.model import VAE  # noqa: E402


def write_plots(model: VAE, history: list[dict], x_val: torch.Tensor,
                labels: torch.Tensor | None, image_shape: tuple | None, seed: int,
                run_dir: Path) -> None:
    _loss_curves(history, run_dir / "loss.png")
    with torch.no_grad():
        mu, _ = model.encode(x_val)
        _latent_map(mu.numpy(), None if labels is None else labels.numpy(),
                    run_dir / "latent.png")
        if image_shape is not None:
            z = torch.randn(64, model.latent_dim, generator=torch.Generator().manual_seed(seed))
            _image_grid(model.decode(z)[0].numpy(), image_shape, "samples from z ~ N(0, I)",
                        run_dir / "samples.png")
            rows = x_val[:32]
            recon = model.decode(mu[:32])[0]
            pairs = torch.stack([rows, recon], dim=1).reshape(-1, rows.shape[1])  # (2·32, F)
            _image_grid(pairs.numpy(), image_shape, "validation rows | reconstructions (of mu)",
                        run_dir / "reconstructions.png")


def _loss_curves(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train (KL weighted)")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation (negative ELBO)")
    if all("stop_loss" in h for h in history):  # histories saved before it have none
        ax.plot(epochs, [h["stop_loss"] for h in history], "--",
                label="validation, cells capped (early stopping's)")
    ax.set(xlabel="epoch", ylabel="nats per row", title="loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _latent_map(mu: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
    """mu of validation rows; projected on its first two principal axes when D > 2."""
    if mu.shape[1] > 2:
        centred = mu - mu.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points, axes = centred @ vt[:2].T, ("PC 1 of mu", "PC 2 of mu")
    else:
        points = np.pad(mu, ((0, 0), (0, 2 - mu.shape[1])))
        axes = ("mu 1", "mu 2")
    fig, ax = plt.subplots(figsize=(5, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=8)
    else:
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=8)
        fig.colorbar(scatter, ax=ax, label="class")
    ax.set(xlabel=axes[0], ylabel=axes[1], title="validation rows in latent space")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _image_grid(rows: np.ndarray, image_shape: tuple, title: str, path: Path) -> None:
    """The rows as images, 8 to a line with a one-pixel gap, drawn as one picture (a subplot
    per image took more than a second per grid)."""
    n_cols, (h, w) = 8, image_shape
    n_rows = int(np.ceil(len(rows) / n_cols))
    mosaic = np.full((n_rows * (h + 1) - 1, n_cols * (w + 1) - 1), np.nan)
    for i, row in enumerate(rows):
        top, left = (i // n_cols) * (h + 1), (i % n_cols) * (w + 1)
        mosaic[top:top + h, left:left + w] = row.reshape(h, w)
    fig, ax = plt.subplots(figsize=(n_cols, n_rows + 0.5))
    ax.imshow(mosaic, cmap="gray_r")
    ax.axis("off")
    ax.set_title(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)
