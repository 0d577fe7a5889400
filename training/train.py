"""The training loop: Adam, KL warm-up, a trimmed ELBO, a moving average of the weights, early
stopping, an atomic checkpoint after an epoch, at most every quarter second.

Every epoch draws its shuffling and its noise from a generator seeded by (seed, epoch), so a run
resumed from its checkpoint ends with exactly the weights of an uninterrupted run.
"""

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from serving.core.rows import InputError
from serving.core.schema import Schema
from serving.tables.files import atomic_write
from training.config import TrainConfig
from training.data import (Dataset, Split, fit_normalization, in_memory, load_dataset,
                           split_dataset, table_dataset)
from training.model import VAE, Layout
from training.objective import StepGuard, WeightAverage, kl_weight, trimmed_mean
from training.sizing import choose_sizes, choose_threads, trim_share
from training.stream import epoch_batches, open_streamed, read_validation_and_stats

CHECKPOINT = "checkpoint.pt"  # the state to resume from, rewritten after an epoch
# At most this often: a save takes about 10 ms, a fifth of a digits epoch. A resumed run redoes
# at most these seconds of epochs, and ends with the same weights.
CHECKPOINT_EVERY_S = 0.25
MODEL = "model.pt"  # the finished run: best weights, config, data summary, validation rows
METRICS = "metrics.json"
EVALUATION = "evaluation.parquet"  # with --label-column: the rows kept for `vae evaluate`


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists, or has nothing to resume)."""


VALIDATION_STREAM = 2**32  # the generator of the fixed validation noise, apart from every epoch's


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def train(config: TrainConfig, run_dir: str | os.PathLike, progress: bool = True,
          threads: int | None = None, explain: bool = True) -> dict:
    """Train a new run in run_dir (which must not hold one) and return its metrics.
    config.data may be rows in memory (a DataFrame, a pyarrow table, a 2-D array): such a run
    cannot be resumed, and its config names the data as "in memory". With explain, what was
    decided about a table's columns is printed on stderr, one line per kind."""
    rows = None
    if in_memory(config.data) is not None:
        rows = config.data
        config = dataclasses.replace(config, data=f"in memory ({type(rows).__name__})")
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).is_file() or (run_dir / MODEL).is_file():
        raise RunError(f"{run_dir} already holds a run; pass --resume to continue it, "
                       f"or choose another --out")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _fit(config, run_dir, None, progress, threads, rows, explain)
    except InputError:  # refused data: nothing was trained, so no empty run is left behind
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def resume(run_dir: str | os.PathLike, epochs: int | None = None, progress: bool = True,
           threads: int | None = None) -> dict:
    """Continue an interrupted run with its own settings (and, if given, a new epoch limit)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise RunError(f"{run_dir} has no {CHECKPOINT} to resume; run without --resume")
    checkpoint = torch.load(run_dir / CHECKPOINT, weights_only=True)
    config = TrainConfig.from_dict(checkpoint["config"])
    if config.data.startswith("in memory"):
        raise RunError(f"{run_dir} was trained from rows in memory, which a resumed run cannot "
                       f"read again; train it anew")
    if epochs is not None:
        config.epochs = epochs
    return _fit(config, run_dir, checkpoint, progress, threads)


def _fit(config: TrainConfig, run_dir: Path, checkpoint: dict | None, progress: bool,
         threads: int | None, rows=None, explain: bool = True) -> dict:
    options = (config.label_column, config.normal_value, config.numeric, config.categorical,
               config.ignore)
    streamed = None if rows is not None else \
        open_streamed(config.data, config.seed, config.val_fraction, *options)
    if streamed is not None:  # too large to read whole (training.stream)
        x_val = read_validation_and_stats(streamed)
        data = Dataset(config.data, x_val, streamed.schema.names, schema=streamed.schema,
                       notes=streamed.notes)
        split = Split(np.zeros(0, np.int64), np.arange(len(x_val)), np.zeros(0, np.int64))
        n_train, (mean, std), missing = streamed.n_train, (streamed.stats["mean"],
                                                          streamed.stats["std"]), \
            streamed.stats["missing"]
    else:
        data = load_dataset(config.data, *options) if rows is None else \
            table_dataset(rows, *options)
        split = split_dataset(data, config.val_fraction, config.seed)
        n_train, missing = len(split.train), bool(np.isnan(data.x).any())
        mean, std = fit_normalization(data.x[split.train], data.schema)
    for line in data.notes if explain else ():
        print(f"vae train: {line}", file=sys.stderr, flush=True)
    config, chosen = choose_sizes(config, n_train, data.x.shape[1])  # resumed: as saved
    # Set, not left to torch: its default (every core) is many times slower for small models
    # on a busy machine.
    threads = threads or choose_threads(config)
    torch.set_num_threads(threads)
    chosen += f"; {threads} torch thread{'s' if threads > 1 else ''}"
    if progress:
        print(chosen, file=sys.stderr, flush=True)
    x_val = torch.from_numpy(data.x[split.val])
    if streamed is not None:
        def batches(generator, epoch):
            for batch in epoch_batches(streamed, config.seed, epoch,
                                       config.epoch_rows or n_train, config.batch_size):
                yield torch.from_numpy(batch)
    else:
        x_train = torch.from_numpy(data.x[split.train])

        def batches(generator, epoch):
            order = torch.randperm(len(x_train), generator=generator)
            for start in range(0, min(config.epoch_rows or n_train, n_train), config.batch_size):
                yield x_train[order[start:start + config.batch_size]]

    torch.manual_seed(config.seed)
    model = VAE(data.x.shape[1], config, torch.from_numpy(mean), torch.from_numpy(std),
                Layout.from_schema(data.schema, mask=missing))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay, fused=True)
    # what validation, early stopping and the saved model see: the averaged weights, or the last
    average = WeightAverage(model, config.weight_average) if config.weight_average else None
    evaluated = average.model if average else model
    val_eps = torch.randn(1, len(x_val), config.latent_dim,
                          generator=epoch_generator(config.seed, VALIDATION_STREAM))
    state = {"epoch": 0, "history": [], "best_val": float("inf"), "best_epoch": -1,
             "best_state": None}
    guard = StepGuard()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if average:
            average.load_state_dict(checkpoint["average"])
        if checkpoint.get("guard"):  # runs checkpointed before the guard had none
            guard.load_state_dict(checkpoint["guard"])
        state = {k: checkpoint[k] for k in state}

    def save() -> None:
        atomic_save({"config": config.to_dict(), "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(),
                     "average": average.state_dict() if average else None,
                     "guard": guard.state_dict(), **state},
                    run_dir / CHECKPOINT)

    started = saved = time.perf_counter()
    bar = tqdm(total=config.epochs, initial=state["epoch"], desc="train", unit="epoch",
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    for epoch in range(state["epoch"], config.epochs):
        if epoch - state["best_epoch"] >= config.patience and state["best_epoch"] > 0:
            break  # early stopping: no better validation loss for `patience` epochs
        epoch_started = time.perf_counter()
        train_loss = _train_epoch(model, optimizer, average, batches, config, epoch, guard)
        rows_per_s = min(config.epoch_rows or n_train, n_train) / max(
            time.perf_counter() - epoch_started, 1e-9)
        with torch.no_grad():
            val = evaluated.loss(x_val, val_eps)  # beta = 1: the negative ELBO
        # Early stopping watches the plain -ELBO of the validation rows: trimmed, it ignored
        # the rows that overfitting hurts first (digits ran 237 epochs to a test -ELBO 47 nats
        # worse); anomalies the gradient leaves out stay badly fitted, so they barely move it.
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val.loss.mean().item(),
                  "val_recon_nll": val.recon_nll.mean().item(), "val_kl": val.kl.mean().item(),
                  "skipped_steps": guard.skipped, "clipped_steps": guard.clipped}
        state["history"].append(record)
        state["epoch"] = epoch + 1
        # Only a model trained on the whole KL term can be the best: during the warm-up the
        # -ELBO first falls and then rises, and an averaged model is slow to come back below
        # its early low (a digits run stopped at epoch 22 with the model of epoch 2).
        settled = epoch + 1 >= min(config.warmup_epochs, config.epochs)
        if settled and record["val_loss"] < state["best_val"]:
            state.update(best_val=record["val_loss"], best_epoch=epoch + 1,
                         best_state={k: v.clone() for k, v in evaluated.state_dict().items()})
        if time.perf_counter() - saved >= CHECKPOINT_EVERY_S:
            save()
            saved = time.perf_counter()
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.2f}", val=f"{record['val_loss']:.2f}",
                        best=f"{state['best_val']:.2f}", skipped=guard.skipped,
                        clipped=guard.clipped, rows_s=f"{rows_per_s:.0f}")
    bar.close()
    save()  # the state the run ended in (after early stopping too)
    metrics = _finish(model, config, data, state, x_val, split, n_train, run_dir,
                      time.perf_counter() - started)
    return {**metrics, "chosen": chosen}


def _train_epoch(model: VAE, optimizer: torch.optim.Optimizer, average: WeightAverage | None,
                 batches, config: TrainConfig, epoch: int, guard: StepGuard) -> float:
    """One epoch over batches(generator, epoch); the mean loss of the batches stepped on (a
    skipped batch is left out)."""
    generator = epoch_generator(config.seed, epoch)
    beta, total, rows = kl_weight(config, epoch), 0.0, 0
    share = trim_share(config)
    for x in batches(generator, epoch):
        eps = torch.randn(1, len(x), config.latent_dim, generator=generator)  # (K=1, B, D)
        loss = trimmed_mean(model.loss(x, eps, beta).loss, share, config.outlying)
        if not guard.admit(loss):
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        guard.clip(model)
        optimizer.step()
        if average:
            average.update()
        total += loss.item() * len(x)
        rows += len(x)
    return total / max(rows, 1)


def _finish(model: VAE, config: TrainConfig, data: Dataset, state: dict, x_val: torch.Tensor,
            split: Split, n_train: int, run_dir: Path, seconds: float) -> dict:
    model.load_state_dict(state["best_state"])
    model.eval()
    best = state["history"][state["best_epoch"] - 1]
    metrics = {
        "dataset": data.name, "train_rows": n_train, "val_rows": len(split.val),
        "epochs": state["epoch"], "best_epoch": state["best_epoch"],
        "train_loss": best["train_loss"], "val_loss": best["val_loss"],
        "seconds": round(seconds, 2), "history": state["history"],
    }
    if data.anomalous is not None:
        metrics["evaluation_rows"] = len(split.held_out)
        metrics["evaluation_anomalous_rows"] = int(data.anomalous[split.held_out].sum())
        _write_held_out(data, split.held_out, run_dir / EVALUATION)
    labels = None if data.labels is None else torch.from_numpy(data.labels[split.val])
    atomic_save({
        "config": config.to_dict(), "state_dict": model.state_dict(),
        "feature_names": data.feature_names, "schema": data.schema.model_dump_json(),
        "mask_input": model.layout.mask,
        "dataset": data.name,
        "image_shape": data.image_shape, "x_val": x_val, "val_labels": labels,
        "metrics": {k: v for k, v in metrics.items() if k != "history"},
    }, run_dir / MODEL)
    atomic_write(run_dir / METRICS,
                 lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    from training.plots import write_plots  # matplotlib is slow to import; only needed here
    write_plots(model, metrics["history"], x_val, labels, data.image_shape, config.seed, run_dir)
    return metrics


def _write_held_out(data: Dataset, rows: np.ndarray, path: Path) -> None:
    """The held-out rows, features and label column, as a file `vae evaluate` reads: a file's
    rows as they were read, an array's as its columns."""
    import pyarrow as pa
    from pyarrow import parquet

    if data.table is not None:
        held_out = data.table.take(pa.array(rows))
        atomic_write(path, lambda tmp: parquet.write_table(held_out, tmp))
        return
    columns = {name: data.x[rows, i] for i, name in enumerate(data.feature_names)}
    columns[data.label_column] = data.label_values[rows]
    atomic_write(path, lambda tmp: parquet.write_table(pa.table(columns), tmp))


def saved_schema(saved: dict) -> Schema | None:
    """The column schema of a run; None for runs made before schemas (all numeric, complete)."""
    return Schema.model_validate_json(saved["schema"]) if saved.get("schema") else None


def load_run(run_dir: str | os.PathLike) -> tuple[VAE, dict]:
    """The finished model of a run directory, in eval mode, and everything saved beside it."""
    path = Path(run_dir) / MODEL
    if not path.is_file():
        raise RunError(f"{run_dir} has no {MODEL}; train it first with `vae train --out "
                       f"{run_dir}` (or finish it with --resume)")
    saved = torch.load(path, weights_only=True)
    config = TrainConfig.from_dict(saved["config"])
    schema = saved_schema(saved)
    model = VAE(len(saved["feature_names"]), config,
                layout=None if schema is None else Layout.from_schema(schema,
                                                                      saved["mask_input"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, saved
