import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tests.conftest import ROOT, SMALL
from training.config import TrainConfig
from training.objective import WeightAverage
from training.train import CHECKPOINT, MODEL, RunError, load_run, resume, train


def test_short_digits_run_lowers_the_validation_loss(digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history) == SMALL["epochs"]
    assert metrics["val_loss"] < history[0]["val_loss"] - 10  # nats per row
    # metrics report the plain -ELBO of the epoch early stopping kept
    assert metrics["val_loss"] == history[metrics["best_epoch"] - 1]["val_loss"]
    for plot in ("loss.png", "latent.png", "samples.png", "reconstructions.png"):
        assert (digits_run / plot).stat().st_size > 1000


def test_same_seed_gives_identical_weights(tmp_path, digits_run, digits_run_again):
    first, _ = load_run(digits_run)
    second, _ = load_run(digits_run_again)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    train(TrainConfig(**{**SMALL, "seed": 1}), tmp_path / "other", progress=False)
    third, _ = load_run(tmp_path / "other")
    assert not torch.equal(first.encoder[0].weight, third.encoder[0].weight)


def test_a_run_directory_is_never_overwritten(digits_run, tmp_path):
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        train(TrainConfig(**SMALL), digits_run, progress=False)
    with pytest.raises(RunError, match="no checkpoint.pt to resume"):
        resume(tmp_path)
    with pytest.raises(RunError, match="has no model.pt; train it first"):
        load_run(tmp_path)


def _epochs_done(run_dir) -> int:
    try:
        return torch.load(run_dir / CHECKPOINT, weights_only=True)["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def _start_and_stop(run_dir, sig, after_epoch: int, *args) -> int:
    """Start `vae train` in a subprocess and send it `sig` once `after_epoch` epochs are saved."""
    # SIGINT as a terminal gives it, even when the suite runs as a background job (whose
    # children start with SIGINT ignored, and Python then never raises KeyboardInterrupt)
    process = subprocess.Popen([sys.executable, "-m", "vae_service.cli", "train", *args, "--out",
                                str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while _epochs_done(run_dir) < after_epoch and process.poll() is None:
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    # started for 1000 epochs, so that the signals land mid-run however fast the machine
    # is; finished at 30 (the epoch limit changes nothing but where the loop stops)
    args = ["--epochs", "1000", "--hidden", "64,64", "--latent-dim", "4", "--patience", "1000",
            "--batch-size", "16", "--quiet"]
    code, stderr = _start_and_stop(tmp_path / "run", signal.SIGINT, 3, *args)
    assert code == 130 and "resume with the same command and --resume" in stderr
    stopped_at = _epochs_done(tmp_path / "run")
    assert 3 <= stopped_at < 30 and not (tmp_path / "run" / MODEL).exists()

    code, _ = _start_and_stop(tmp_path / "run", signal.SIGKILL, stopped_at + 2, "--resume",
                              "--quiet")
    assert code == -signal.SIGKILL
    assert _epochs_done(tmp_path / "run") > stopped_at

    resume(tmp_path / "run", epochs=30, progress=False)  # the rest needs no fresh interpreter
    train(TrainConfig(epochs=30, hidden=(64, 64), latent_dim=4, patience=1000, batch_size=16),
          tmp_path / "straight", progress=False)  # the same settings as `args`
    resumed, _ = load_run(tmp_path / "run")
    straight, _ = load_run(tmp_path / "straight")
    for (name, a), (_, b) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(a, b), name
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 31))


def test_the_weight_average_weighs_each_step_by_its_age():
    # after n steps, the weights of step i weigh decay^(n-i), normalized; the initial ones nothing
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    seen = []
    for _ in range(5):
        with torch.no_grad():
            model.weight.normal_()
        seen.append(model.weight.detach().clone())
        average.update()
    ages = 0.9 ** torch.arange(4.0, -1.0, -1.0)
    expected = (ages[:, None, None] * torch.stack(seen)).sum(0) / ages.sum()
    torch.testing.assert_close(average.model.weight, expected)


def test_the_best_model_is_one_trained_on_the_whole_kl_term(tmp_path):
    # digits without its 7s, 70% of the rows (as bench/quality.py draws them for seed 1): the
    # -ELBO of the validation rows is lowest at epoch 2, rises during the KL warm-up, and the
    # averaged model takes over 20 epochs to come back below that early low (early stopping
    # on the plain -ELBO, and every column's variance floor min_x_logvar's: capped, or with the
    # integer columns' floor, this run's validation loss has no such dip; the Gaussian's run,
    # whose contamination is 0 at this size)
    bunch = load_digits()
    normal = np.flatnonzero(bunch.target != 7)
    rows = np.random.default_rng([1, 7]).permutation(normal)[:round(0.7 * len(normal))]
    np.save(tmp_path / "rows.npy", bunch.data[rows].astype(np.float32))
    metrics = train(TrainConfig(data=str(tmp_path / "rows.npy"), seed=1, epochs=25,
                                val_cap=None, integer_floor=False, likelihood="gaussian"),
                    tmp_path / "run", progress=False)
    losses = [h["val_loss"] for h in metrics["history"]]
    warmup = TrainConfig().warmup_epochs
    assert min(losses[:warmup - 1]) < losses[metrics["best_epoch"] - 1]  # the early low...
    assert metrics["best_epoch"] >= warmup  # ...is not the model kept


def test_early_stopping_keeps_the_epoch_of_the_least_capped_loss(tmp_path):
    """One validation row has a cell 1,000 SDs off. As the decoder grows sure of that column,
    the plain -ELBO rises with that cell while the capped loss goes on falling: the capped
    loss picks the epoch kept. The Gaussian's cells: a Student-t cell is never capped."""
    from training.data import split_rows

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2)) @ rng.normal(size=(2, 8)) + 0.05 * rng.normal(size=(600, 8))
    _, val = split_rows(len(x), 0.2, seed=0)  # the run's validation rows (seed 0)
    x[val[0], 0] = x[:, 0].mean() + 1000 * x[:, 0].std()
    np.save(tmp_path / "rows.npy", x.astype(np.float32))
    metrics = train(TrainConfig(data=str(tmp_path / "rows.npy"), epochs=15, hidden=(32,),
                                latent_dim=2, warmup_epochs=1, patience=100, contamination=0.0,
                                likelihood="gaussian"),
                    tmp_path / "run", progress=False)
    history = metrics["history"]
    plain = min(history, key=lambda h: h["val_loss"])["epoch"]
    capped = min(history, key=lambda h: h["stop_loss"])["epoch"]
    assert plain != capped  # the two losses disagree on this run...
    assert metrics["best_epoch"] == capped  # ...and early stopping follows the capped one


def test_early_stopping_can_watch_the_plain_elbo(tmp_path):
    """With val_cap None (runs saved before it), early stopping's loss is the plain -ELBO."""
    assert TrainConfig.from_dict({}).val_cap is None and TrainConfig().val_cap == 4.0
    metrics = train(TrainConfig(epochs=3, hidden=(16,), latent_dim=2, val_cap=None),
                    tmp_path / "run", progress=False)
    assert all(h["stop_loss"] == h["val_loss"] for h in metrics["history"])


def test_a_run_saved_before_the_weight_average_resumes_without_it():
    saved = TrainConfig().to_dict()
    del saved["weight_average"]
    assert TrainConfig().weight_average > 0 and TrainConfig.from_dict(saved).weight_average == 0


def test_no_sampling_run_records_its_ablation(no_sampling_run):
    model, saved = load_run(no_sampling_run)
    assert model.sampling is False and saved["config"]["sampling"] is False


def test_the_step_guard_skips_non_finite_and_exploding_batches_and_clips_norms():
    """Issue 26: a batch loss of 1e12 among losses near 80, or a NaN, is not stepped on; a
    gradient 100,000 times the usual norm is clipped; the counts are kept."""
    from training.objective import StepGuard
    guard = StepGuard()
    rng = np.random.default_rng(0)
    assert all(guard.admit(torch.tensor(80.0 + rng.normal())) for _ in range(40))
    assert not guard.admit(torch.tensor(1e12)) and not guard.admit(torch.tensor(float("nan")))
    assert guard.admit(torch.tensor(95.0)) and guard.skipped == 2
    layer = torch.nn.Linear(4, 1)
    for scale in [1.0] * 40 + [1e5]:
        layer.zero_grad()
        (scale * layer(torch.ones(3, 4)).sum()).backward()
        guard.clip(layer)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.ravel() for p in layer.parameters()]))
    assert guard.clipped == 1 and norm < 1001 * guard.norms[0]


def test_the_step_guard_decides_as_medians_of_its_windows_would_across_a_resume():
    """The guard keeps its windows sorted to spare a median a step: its thresholds are still
    np.median's of the last WINDOW losses and norms, and a guard loaded from a checkpoint
    decides as the one saved would."""
    from training.objective import StepGuard, _median
    rng = np.random.default_rng(1)
    guard, layer = StepGuard(), torch.nn.Linear(4, 1)
    for step in range(700):
        guard.admit(torch.tensor(float(rng.standard_cauchy()) + 80.0))
        layer.zero_grad()
        (float(rng.lognormal()) * layer(torch.ones(3, 4)).sum()).backward()
        guard.clip(layer)
        if step in (31, 255, 699):
            for window, ordered in ((guard.losses, guard._sorted_losses),
                                    (guard.norms, guard._sorted_norms)):
                assert len(window) == min(step + 1, StepGuard.WINDOW)
                assert _median(ordered) == np.median(window)
    resumed = StepGuard()
    resumed.load_state_dict(guard.state_dict())
    for value in (80.0, 1e9, 95.0):
        assert resumed.admit(torch.tensor(value)) == guard.admit(torch.tensor(value))
    assert resumed.state_dict() == guard.state_dict()


def test_a_run_never_steps_on_an_exploding_batch(tmp_path, monkeypatch):
    """A batch whose loss explodes mid-run is skipped: the epoch's loss and the weights stay
    finite, and the run's history counts it."""
    from training.model import VAE
    calls = {"n": 0}
    original = VAE.loss

    def sometimes_huge(self, x, eps, *beta_and_cap):
        terms = original(self, x, eps, *beta_and_cap)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 60:
                terms.loss = terms.loss * 1e12
        return terms
    monkeypatch.setattr(VAE, "loss", sometimes_huge)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "rows.npy", rng.normal(size=(5000, 8)).astype(np.float32))
    metrics = train(TrainConfig(data=str(tmp_path / "rows.npy"), epochs=2, hidden=(32, 32),
                                latent_dim=2, patience=100), tmp_path / "run", progress=False,
                    threads=1)
    assert [h["skipped_steps"] for h in metrics["history"]] == [1, 1]
    assert all(h["train_loss"] < 100 for h in metrics["history"])
    model, _ = load_run(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())
