"""What each step optimizes and keeps: the KL warm-up, the trimmed mean of the rows' losses
(--contamination), and the moving average of the weights (--weight-average)."""

import copy

import numpy as np
import torch

from serving.core.rows import InputError
from training.config import TrainConfig
from training.model import VAE


class WeightAverage:
    """An exponential moving average of the model's weights, updated after every step (Polyak
    averaging), corrected for its start as Adam corrects its moments: after n steps, each
    step's weights weigh decay^age / (1 + decay + ... + decay^(n-1)), and the initial weights
    nothing."""

    def __init__(self, model: VAE, decay: float):
        if not 0.0 <= decay < 1.0:
            raise InputError(f"weight_average {decay!r} is not a decay in [0, 1) (0 keeps the "
                             f"last weights)")
        self.model, self.decay, self.steps = copy.deepcopy(model), decay, 0
        self._pairs = list(self.model.parameters()), list(model.parameters())

    @torch.no_grad()
    def update(self) -> None:
        """Take in the followed model's weights after a step, all tensors in one call (as
        torch.optim.swa_utils does)."""
        self.steps += 1
        torch._foreach_lerp_(*self._pairs, (1.0 - self.decay) / (1.0 - self.decay**self.steps))

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = state["steps"]


def kl_weight(config: TrainConfig, epoch: int) -> float:
    if config.warmup_epochs <= 0:
        return config.beta
    return config.beta * min(1.0, (epoch + 1) / config.warmup_epochs)


def trimmed_mean(loss: torch.Tensor, share: float | None, outlying: float = 5.0) -> torch.Tensor:
    """The mean of the rows' losses after leaving out the worst `share` of them; with share
    None (--contamination auto), the rows more than `outlying` robust standard deviations
    (1.4826 MAD) above the median of these losses, at most half of them."""
    if share is None:
        loss_ = loss.detach()
        median = loss_.median()
        cut = median + outlying * 1.4826 * (loss_ - median).abs().median()
        kept = loss[loss_ <= cut]
        return kept.mean() if len(kept) * 2 >= len(loss) else trimmed_mean(loss, 0.5)
    if share <= 0:
        return loss.mean()
    kept = max(1, int(np.ceil(len(loss) * (1.0 - share))))
    return loss.topk(kept, largest=False).values.mean()
