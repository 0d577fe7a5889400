"""One training run's state, advanced an epoch at a time: the model, AdamW, the moving average
of the weights, the step guard, the history and the best weights so far. The one-process loop
(training.train) and each Ray Train worker (training.ray_train) drive the same."""

import numpy as np
import torch
from tqdm import tqdm

from training.config import TrainConfig
from training.model import VAE, Layout
from training.objective import StepGuard, WeightAverage, kl_weight, trimmed_mean
from training.sizing import trim_share

VALIDATION_STREAM = 2**32  # the generator of the fixed validation noise, apart from every epoch's


def epoch_generator(seed: int, epoch: int, *stream: int) -> torch.Generator:
    """The generator of an epoch's shuffling and noise (and of a data-parallel worker's,
    with its rank as the stream)."""
    state = np.random.SeedSequence([seed, epoch, *stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


class Run:
    def __init__(self, config: TrainConfig, n_features: int, mean: np.ndarray, std: np.ndarray,
                 layout: Layout, x_val: torch.Tensor, integer: np.ndarray):
        self.config, self.x_val = config, x_val
        torch.manual_seed(config.seed)
        self.model = VAE(n_features, config, torch.from_numpy(mean), torch.from_numpy(std),
                         layout, torch.from_numpy(integer))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay, fused=True)
        # what validation, early stopping and the saved model see: the averaged weights, or
        # the last
        self.average = WeightAverage(self.model, config.weight_average) \
            if config.weight_average else None
        self.evaluated = self.average.model if self.average else self.model
        self.val_eps = torch.randn(1, len(x_val), config.latent_dim,
                                   generator=epoch_generator(config.seed, VALIDATION_STREAM))
        self.guard = StepGuard()
        self.state = {"epoch": 0, "history": [], "best_val": float("inf"), "best_epoch": -1,
                      "best_state": None}

    def load(self, checkpoint: dict) -> None:
        """Continue from checkpoint()'s dict."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.average:
            self.average.load_state_dict(checkpoint["average"])
        if checkpoint.get("guard"):  # runs checkpointed before the guard had none
            self.guard.load_state_dict(checkpoint["guard"])
        self.state = {k: checkpoint[k] for k in self.state}

    def checkpoint(self) -> dict:
        return {"config": self.config.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "average": self.average.state_dict() if self.average else None,
                "guard": self.guard.state_dict(), **self.state}

    def stopped(self) -> bool:
        """Early stopping: no better validation loss for `patience` epochs."""
        epoch, best = self.state["epoch"], self.state["best_epoch"]
        return epoch - best >= self.config.patience and best > 0

    def epoch(self, batches, generator: torch.Generator | None = None, sync=None) -> dict:
        """Train the next epoch over batches(generator, epoch), validate, keep the best
        weights; the epoch's record. With data-parallel workers, `sync` makes them agree: on
        the loss the guard judges (`sync.loss`) and on the gradient (`sync.grads`, the mean)."""
        config, epoch = self.config, self.state["epoch"]
        generator = generator or epoch_generator(config.seed, epoch)
        beta, total, rows = kl_weight(config, epoch), 0.0, 0
        share = trim_share(config)
        for x in batches(generator, epoch):
            eps = torch.randn(1, len(x), config.latent_dim, generator=generator)  # (K=1, B, D)
            terms = self.model.loss(x, eps, beta, config.cell_cap if share is None else None)
            loss = trimmed_mean(terms.loss, share, config.outlying, judged=terms.judged,
                                weight=config.outlying_weight)
            if not self.guard.admit(sync.loss(loss) if sync else loss):
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if sync:
                sync.grads(self.model)
            self.guard.clip(self.model)
            self.optimizer.step()
            if self.average:
                self.average.update()
            total += loss.item() * len(x)
            rows += len(x)
        with torch.no_grad():  # beta = 1: the negative ELBO, and its cells capped at val_cap
            val = self.evaluated.loss(self.x_val, self.val_eps, 1.0, config.val_cap)
        # Early stopping watches the -ELBO of every validation row: trimmed, it ignored the rows
        # that overfitting hurts first; anomalies the gradient leaves out stay badly fitted, so
        # they barely move it. Its cells are capped (val_cap): uncapped, a few cells that the
        # sharpening decoder misses by tens of SDs outweighed the improving rest and ended the
        # run early (digits hold-one-out 0.947 -> 0.950; docs/training.md).
        record = {"epoch": epoch + 1, "train_loss": total / max(rows, 1),
                  "val_loss": val.loss.mean().item(),
                  "stop_loss": (val.loss if val.judged is None else val.judged).mean().item(),
                  "val_recon_nll": val.recon_nll.mean().item(),
                  "val_kl": val.kl.mean().item(), "skipped_steps": self.guard.skipped,
                  "clipped_steps": self.guard.clipped}
        self.state["history"].append(record)
        self.state["epoch"] = epoch + 1
        # Only a model trained on the whole KL term can be the best: during the warm-up the
        # -ELBO first falls and then rises, and an averaged model is slow to come back below
        # its early low.
        settled = epoch + 1 >= min(config.warmup_epochs, config.epochs)
        if settled and record["stop_loss"] < self.state["best_val"]:
            self.state.update(best_val=record["stop_loss"], best_epoch=epoch + 1,
                              best_state={k: v.clone()
                                          for k, v in self.evaluated.state_dict().items()})
        return record


class Progress:
    """The bar both engines show: epochs done (tqdm's rate and ETA), and after it the epoch's
    losses (the validation -ELBO, and early stopping's: its cells capped), the best of early
    stopping's so far, rows/s, optimizer steps, and the steps the guard skipped or clipped."""

    def __init__(self, config: TrainConfig, initial: int, epoch_rows: int, enabled: bool):
        self.steps_per_epoch = -(-epoch_rows // config.batch_size)
        self.bar = tqdm(total=config.epochs, initial=initial, desc="train", unit="epoch",
                        disable=not enabled, dynamic_ncols=True, mininterval=0.5)

    def show(self, record: dict, best_val: float) -> None:
        """An epoch's record (Run.epoch's, with rows_per_s)."""
        self.bar.update(record["epoch"] - self.bar.n)
        self.bar.set_postfix(train=f"{record['train_loss']:.2f}", val=f"{record['val_loss']:.2f}",
                             stop=f"{record['stop_loss']:.2f}",
                             best=f"{best_val:.2f}" if best_val < float("inf") else "-",
                             skipped=record["skipped_steps"], clipped=record["clipped_steps"],
                             rows_s=record["rows_per_s"],
                             steps=record["epoch"] * self.steps_per_epoch)

    def close(self) -> None:
        self.bar.close()
