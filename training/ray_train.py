"""`vae train --engine ray`: data-parallel training with Ray Train (TorchTrainer, gloo on CPU).

- The driver prepares the rows as one process does (training.prepare): the validation rows,
  the normalisation, the sizes.
- The training rows go to Ray Data, from the driver's array or, for a streamed table, read row
  group by row group by Ray tasks on the cluster (validation rows left out). They are split
  into one equal, ordered shard per worker, which the worker holds.
- Every worker runs training.loop.Run from the same seed, so all start with the same weights.
  At each step each worker takes batch_size / workers rows of its shard (a permutation seeded by
  (seed, epoch, rank)); the gradients are averaged over gloo (the torch.distributed group Ray
  Train sets up), and the step guard judges the mean loss, so the workers stay identical.
- Rank 0 reports a checkpoint every CHECKPOINT_EVERY_S and after the last epoch. A
  worker that dies is replaced (FailureConfig) and every worker continues from the last
  checkpoint: the run ends with the weights it would have had.
- Rank 0 hands each epoch's record to a Ray actor (LatestRecord) without waiting; the driver
  polls it into the same progress bar as one process's.
- The driver writes the run directory from the final checkpoint, as a one-process run does.

How it differs from one process: each step's rows come from every shard and each worker draws
its own noise, so the weights are not a one-process run's. With the same seed and number of
workers, they are the same from run to run.
"""

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from serving.core.rows import InputError
from training.config import TrainConfig
from training.loop import Progress, Run, epoch_generator
from training.model import Layout
from training.prepare import Prepared, epoch_rows, prepare, rows_in_memory
from training.sizing import choose_sizes
from training.stream import matrices, training_rows

# A report and a checkpoint this often (and at the end); a restart redoes at most as much
CHECKPOINT_EVERY_S = 10.0
CHECKPOINT_FILE = "state.pt"


def train_on_ray(config: TrainConfig, run_dir: str | os.PathLike, address: str | None = None,
                 workers: int = 2, threads: int = 1, progress: bool = True) -> dict:
    """Train a new run in run_dir on the Ray cluster at `address` (None: a local Ray) with
    `workers` Ray Train workers of `threads` torch threads each; its metrics."""
    from serving.jobs.ray_engine import ClusterError, join_ray
    from training.train import CHECKPOINT, MODEL, RunError, finish

    try:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise ClusterError("--engine ray needs Ray Train: pip install '.[ray,train]'") from None
    if workers < 1:
        raise InputError(f"--ray-workers {workers}: expected at least 1")
    run_dir = Path(run_dir).resolve()
    if (run_dir / CHECKPOINT).is_file() or (run_dir / MODEL).is_file():
        raise RunError(f"{run_dir} already holds a run; choose another --out")
    prepared = prepare(config)
    for line in prepared.data.notes if progress else ():
        print(f"vae train: {line}", file=sys.stderr, flush=True)
    config, chosen = choose_sizes(config, prepared.n_train, prepared.data.x.shape[1])
    if config.batch_size % workers:
        raise InputError(f"the batch size {config.batch_size} does not split over "
                         f"{workers} workers; give --batch-size a multiple of --ray-workers")
    chosen += f"; Ray Train, {workers} workers × {threads} torch thread{'s' * (threads > 1)}"
    if progress:
        print(chosen, file=sys.stderr, flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    join_ray(ray, address, packages=("serving", "training"))
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    shards = _training_rows_dataset(ray, prepared).split(workers, equal=True)
    latest = ray.remote(num_cpus=0)(LatestRecord).remote()
    setup = {"config": config.to_dict(), "shards": shards, "threads": threads,
             "n_train": prepared.n_train, "x_val": prepared.x_val, "mean": prepared.mean,
             "std": prepared.std, "schema": prepared.data.schema, "missing": prepared.missing,
             "integer": prepared.integer, "latest": latest}
    trainer = TorchTrainer(
        _worker, train_loop_config=setup,
        scaling_config=ScalingConfig(num_workers=workers,
                                     resources_per_worker={"CPU": threads}),
        run_config=RunConfig(name="train", storage_path=str(run_dir / "ray"),
                             failure_config=FailureConfig(max_failures=3),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    bar = Progress(config, 0, epoch_rows(config, prepared.n_train), progress)
    done = threading.Event()
    poller = threading.Thread(target=_show_progress, args=(ray, latest, bar, done), daemon=True)
    poller.start()
    try:
        result = trainer.fit()
    except Exception as e:  # Ray's TrainingFailedError wraps the worker's
        raise ClusterError(f"Ray Train failed: {str(e).splitlines()[0][:300]}") from None
    finally:
        done.set()
        poller.join()
        bar.close()
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)
    run = _run(config, setup)
    run.load(state)
    metrics = finish(run.model, config, prepared.data, run.state,
                     torch.from_numpy(prepared.x_val), prepared.split, prepared.n_train, run_dir,
                     time.perf_counter() - started)
    return {**metrics, "chosen": chosen, "rows_per_s": state["history"][-1].get("rows_per_s")}


class LatestRecord:
    """A Ray actor: the last epoch record rank 0 gave it (with early stopping's best loss)."""

    def __init__(self):
        self.record = None

    def put(self, record: dict) -> None:
        self.record = record

    def get(self) -> dict | None:
        return self.record


def _show_progress(ray, latest, bar: Progress, done: threading.Event) -> None:
    """Until `done` (and once more then): the newest record into the bar, twice a second."""
    shown = 0
    while True:
        finished = done.wait(0.5)
        try:
            record = ray.get(latest.get.remote(), timeout=5)
        except ray.exceptions.GetTimeoutError:  # a busy machine: the next poll may answer
            record = None
        except Exception:  # the cluster is going away with the run: the run reports why
            return
        if record is not None and record["epoch"] > shown:
            bar.show(record, record["best_val"])
            shown = record["epoch"]
        if finished:
            return


def _training_rows_dataset(ray, prepared: Prepared):
    """The training rows as a Ray Dataset (column "data"): the driver's array, or a streamed
    table's row groups read by Ray tasks, validation rows left out."""
    table = prepared.streamed
    if table is None:
        return ray.data.from_numpy(prepared.x_train())

    def read(batch: dict) -> dict:
        rows = [training_rows(table, first, x) for index in batch["part"]
                for first, x in matrices(table, table.parts[index])]
        return {"data": np.concatenate(rows)}

    return ray.data.from_items([{"part": i} for i in range(len(table.parts))]) \
        .map_batches(read, batch_size=1).materialize()


def _run(config: TrainConfig, setup: dict) -> Run:
    schema = setup["schema"]
    return Run(config, len(schema.names), setup["mean"], setup["std"],
               Layout.from_schema(schema, mask=setup["missing"]),
               torch.from_numpy(setup["x_val"]), setup["integer"])


class GlooSync:
    """What keeps data-parallel workers identical: the mean loss and the mean gradient."""

    def __init__(self, world: int):
        import torch.distributed as dist
        self.dist, self.world = dist, world

    def loss(self, loss: torch.Tensor) -> torch.Tensor:
        mean = loss.detach().clone()
        self.dist.all_reduce(mean)
        return mean / self.world

    def grads(self, model: torch.nn.Module) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _worker(setup: dict) -> None:
    """One Ray Train worker's loop (see the module's docstring)."""
    import ray.train

    torch.set_num_threads(setup["threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config = TrainConfig.from_dict(setup["config"])
    shard = setup["shards"][rank]
    x = torch.from_numpy(np.concatenate([b["data"] for b in shard.iter_batches(
        batch_size=None, batch_format="numpy")]).astype(np.float32, copy=False))
    each = min(epoch_rows(config, setup["n_train"]) // world, len(x))
    batches = rows_in_memory(x, config.batch_size // world, each)

    run = _run(config, setup)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a replaced worker: every worker continues from here
        with checkpoint.as_directory() as directory:
            run.load(torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True))
    sync, saved = GlooSync(world), time.perf_counter()
    while run.state["epoch"] < config.epochs and not run.stopped():
        started = time.perf_counter()
        record = run.epoch(batches, epoch_generator(config.seed, run.state["epoch"], rank),
                           sync)
        record["rows_per_s"] = round(each * world / max(time.perf_counter() - started, 1e-9))
        if rank == 0:  # not waited for
            setup["latest"].put.remote({**record, "best_val": run.state["best_val"]})
        # Every worker reports together (a report is collective), only when rank 0's clock
        # says a checkpoint is due, or at the end: Ray Train takes a report every 2 s (its
        # health-check poll), so a report per epoch held each epoch up to 2 s.
        due = torch.tensor([run.state["epoch"] >= config.epochs or run.stopped()
                            or time.perf_counter() - saved >= CHECKPOINT_EVERY_S],
                           dtype=torch.int32)
        sync.dist.broadcast(due, src=0)
        if not due.item():
            continue
        if rank == 0:
            with tempfile.TemporaryDirectory() as directory:
                torch.save(run.checkpoint(), Path(directory) / CHECKPOINT_FILE)
                ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(
                    directory))
        else:
            ray.train.report(record)
        saved = time.perf_counter()

