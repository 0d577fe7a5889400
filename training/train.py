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

from serving.core.rows import InputError
from serving.core.schema import Schema
from serving.tables.files import atomic_write
from training.config import TrainConfig
from training.data import Dataset, Split, in_memory
from training.model import VAE, Layout
from training.loop import Progress, Run
from training.prepare import batches_of, epoch_rows, prepare
from training.sizing import choose_sizes, choose_threads

CHECKPOINT = "checkpoint.pt"  # the state to resume from, rewritten after an epoch
# At most this often: a save takes about 10 ms, a fifth of a digits epoch. A resumed run redoes
# at most these seconds of epochs, and ends with the same weights.
CHECKPOINT_EVERY_S = 0.25
MODEL = "model.pt"  # the finished run: best weights, config, data summary, validation rows
METRICS = "metrics.json"
EVALUATION = "evaluation.parquet"  # with --label-column: the rows kept for `vae evaluate`


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists, or has nothing to resume)."""


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
    prepared = prepare(config, rows)
    data, split, n_train = prepared.data, prepared.split, prepared.n_train
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
    x_val = torch.from_numpy(prepared.x_val)
    batches = batches_of(prepared, config)
    run = Run(config, data.x.shape[1], prepared.mean, prepared.std,
              Layout.from_schema(data.schema, mask=prepared.missing), x_val, prepared.integer)
    if checkpoint is not None:
        run.load(checkpoint)

    started = saved = time.perf_counter()
    bar = Progress(config, run.state["epoch"], epoch_rows(config, n_train), progress)
    while run.state["epoch"] < config.epochs and not run.stopped():
        epoch_started = time.perf_counter()
        record = run.epoch(batches)
        rows_per_s = epoch_rows(config, n_train) / max(time.perf_counter() - epoch_started, 1e-9)
        record["rows_per_s"] = round(rows_per_s)
        if time.perf_counter() - saved >= CHECKPOINT_EVERY_S:
            atomic_save(run.checkpoint(), run_dir / CHECKPOINT)
            saved = time.perf_counter()
        bar.show(record, run.state["best_val"])
    bar.close()
    atomic_save(run.checkpoint(), run_dir / CHECKPOINT)  # as the run ended (early stopping too)
    metrics = finish(run.model, config, data, run.state, x_val, split, n_train, run_dir,
                      time.perf_counter() - started)
    return {**metrics, "chosen": chosen}


def finish(model: VAE, config: TrainConfig, data: Dataset, state: dict, x_val: torch.Tensor,
            split: Split, n_train: int, run_dir: Path, seconds: float) -> dict:
    """The run directory of a finished run: model.pt (the best weights), metrics.json, the
    evaluation rows and the plots."""
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
