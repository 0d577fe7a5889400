"""What each step optimizes and keeps: the KL warm-up, the trimmed mean of the rows' losses
(--contamination), and the moving average of the weights (--weight-average)."""

import bisect
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


def trimmed_mean(loss: torch.Tensor, share: float | None, outlying: float = 5.0,
                 reference: torch.Tensor | None = None,
                 judged: torch.Tensor | None = None, weight: float = 0.0) -> torch.Tensor:
    """The mean of the rows' losses after leaving out the worst `share` of them; with share
    None (--contamination auto), the rows whose `judged` values (by default their losses) lie
    more than `outlying` robust standard deviations (1.4826 MAD) above the median of the
    `reference` values (by default the judged ones); with `weight`, those rows are not left
    out but weighed by it (a weighted mean). When more than half the rows are outlying, the
    worst half is left out, whatever the weight."""
    if share is None:
        judged = loss.detach() if judged is None else judged
        reference = judged if reference is None else reference
        median = reference.median()
        cut = median + outlying * 1.4826 * (reference - median).abs().median()
        inside = judged <= cut
        if int(inside.sum()) * 2 < len(loss):
            return trimmed_mean(loss, 0.5)
        if weight:
            weights = torch.where(inside, 1.0, weight).to(loss.dtype)
            return (loss * weights).sum() / weights.sum()
        return loss[inside].mean()
    if share <= 0:
        return loss.mean()
    kept = max(1, int(np.ceil(len(loss) * (1.0 - share))))
    return loss.topk(kept, largest=False).values.mean()


class StepGuard:
    """Steps that cannot wreck a run: a batch whose loss is not finite, or explodes (beyond
    the recent batches' median by EXPLODE times their spread), is skipped; a step whose
    gradient norm exceeds CLIP times the recent median norm is clipped to that. Both wait
    for WARM batches of history, and neither touches a step they let through (so a run that
    never trips them trains bit for bit as before). Counts go to the progress bar and the
    run's history; the state is checkpointed, so a resumed run decides as the first would.
    The windows are kept sorted too, so that a step costs a bisection, not a median."""

    WARM, WINDOW, EXPLODE, CLIP = 32, 256, 1e4, 1000.0

    def __init__(self):
        self.load_state_dict({"losses": [], "norms": [], "skipped": 0, "clipped": 0})

    def admit(self, loss: torch.Tensor) -> bool:
        """Whether the batch's loss may be stepped on."""
        value = loss.item()
        if not np.isfinite(value):
            self.skipped += 1
            return False
        if len(self.losses) >= self.WARM:
            median = _median(self._sorted_losses)
            floor = max(1e-3 * abs(median), 1e-6)  # the least spread there can be
            # the spread (the median absolute deviation) is needed only beyond the floor's
            # reach, which a batch near the others never is
            if value > median + self.EXPLODE * floor and value > median + self.EXPLODE * max(
                    float(np.median(np.abs(np.subtract(self.losses, median)))), floor):
                self.skipped += 1
                return False
        _slide(self.losses, self._sorted_losses, value, self.WINDOW)
        return True

    def clip(self, model: torch.nn.Module) -> None:
        """Clip the gradient norm to CLIP times the recent median (after the warm-up)."""
        parameters = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        if len(self.norms) >= self.WARM:
            limit = self.CLIP * _median(self._sorted_norms)
            if float(norm) > limit:
                torch.nn.utils.clip_grads_with_norm_(parameters, limit, norm)
                self.clipped += 1
        if np.isfinite(float(norm)):
            _slide(self.norms, self._sorted_norms, float(norm), self.WINDOW)

    def state_dict(self) -> dict:
        return {"losses": self.losses, "norms": self.norms, "skipped": self.skipped,
                "clipped": self.clipped}

    def load_state_dict(self, state: dict) -> None:
        self.losses, self.norms = list(state["losses"]), list(state["norms"])
        self._sorted_losses, self._sorted_norms = sorted(self.losses), sorted(self.norms)
        self.skipped, self.clipped = state["skipped"], state["clipped"]


def _median(ordered: list[float]) -> float:
    """np.median of a sorted list."""
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


def _slide(window: list[float], ordered: list[float], value: float, size: int) -> None:
    """Append value to the window (in arrival order) and to its sorted copy, dropping the
    oldest beyond size from both."""
    window.append(value)
    bisect.insort(ordered, value)
    if len(window) > size:
        del ordered[bisect.bisect_left(ordered, window.pop(0))]
