"""`vae score --engine ray` on a real multi-node Ray cluster: a head and a second raylet
started with `ray start` on this machine, joined by address."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.common import RAY_ENV, ray_cluster
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    with ray_cluster() as address:
        yield address


def test_the_cluster_has_two_nodes(cluster):
    code = ("import ray; ray.init(address=%r, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % cluster)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **RAY_ENV}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "2"


def scored_alike(cluster: str, rows, tmp_path, *options: str) -> None:
    """`vae score` of rows on the cluster and on this machine: the same output bytes."""
    outputs = []
    for engine in (["--engine", "ray", "--ray-address", cluster], []):
        out = tmp_path / f"scores-{len(outputs)}.parquet"
        done = run_cli("score", str(rows), "--out", str(out), *engine, *options,
                       env=RAY_ENV, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        if engine:  # a job's output is its own lines: no Ray INFO lines, no deprecations
            assert not [line for line in done.stderr.splitlines()
                        if "\tINFO " in line or "eprecat" in line], done.stderr[-3000:]
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_ray_engine_on_the_cluster_matches_the_local_engine(cluster, tmp_path, bundle_dir,
                                                            digits_x):
    np.save(tmp_path / "rows.npy", np.resize(digits_x, (4000, 64)))
    scored_alike(cluster, tmp_path / "rows.npy", tmp_path, "--model", str(bundle_dir),
                 "--seed", "9", "--chunk-rows", "1000", "--quiet")


def test_an_int8_bundle_scores_to_the_same_bytes_on_the_cluster(cluster, tmp_path, bundle_dir,
                                                                digits_x):
    """int8 graphs take no code path of their own on Ray either (the default export of the
    digits run is int8: tests/export/test_int8.py)."""
    from serving.core.bundle import load_bundle

    assert load_bundle(bundle_dir).manifest.precision == "int8"
    np.save(tmp_path / "rows.npy", np.resize(digits_x, (3000, 64)))
    scored_alike(cluster, tmp_path / "rows.npy", tmp_path, "--model", str(bundle_dir),
                 "--seed", "5", "--chunk-rows", "700", "--quiet")


def test_a_parquet_directory_of_row_groups_scores_to_the_same_bytes_on_the_cluster(
        cluster, tmp_path, bundle_dir, digits_x):
    """Each row group is a part that a Ray task reads, with its first row's position."""
    import pyarrow as pa
    from pyarrow import parquet
    (tmp_path / "dir").mkdir()
    names = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
    for i, lo in enumerate((0, 1300)):
        rows = np.resize(digits_x, (2600, 64))[lo:lo + 1300]
        parquet.write_table(pa.table(dict(zip(names, rows.T))), tmp_path / "dir" / f"{i}.parquet",
                            row_group_size=500)
    scored_alike(cluster, tmp_path / "dir", tmp_path, "--model", str(bundle_dir), "--seed", "3",
                 "--chunk-rows", "256", "--quiet")


def test_a_mixed_table_scores_to_the_same_bytes_on_the_cluster(cluster, tmp_path, mixed):
    """Categories, missing cells and pass-through columns: the Ray engine reads the CSV through
    the bundle's schema as the local job does."""
    from tests.conftest import transactions
    transactions(3000, 6).to_csv(tmp_path / "tx.csv", index=False)
    scored_alike(cluster, tmp_path / "tx.csv", tmp_path, "--model", str(mixed["bundle"]),
                 "--seed", "9", "--chunk-rows", "700", "--columns", "txn_id", "--quiet")


def test_a_bad_row_on_the_cluster_is_the_local_engines_one_line(cluster, tmp_path,
                                                               bundle_dir, digits_x):
    """Issue 24 #16: Ray's task error is unwrapped into the same line as the local engine's."""
    x = np.resize(digits_x, (3000, 64)).copy()
    x[2500, 3] = np.inf
    np.save(tmp_path / "rows.npy", x)
    done = run_cli("score", str(tmp_path / "rows.npy"), "--model", str(bundle_dir), "--out",
                   str(tmp_path / "out.parquet"), "--engine", "ray", "--ray-address", cluster,
                   "--chunk-rows", "1000", "--quiet", env=RAY_ENV, timeout=600)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("vae score: error: ") and "is infinite" in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_a_ray_client_address_without_ray_client_is_one_line(tmp_path, bundle_dir, digits_x):
    pytest.importorskip("ray")
    if __import__("importlib").util.find_spec("grpc") is not None:
        pytest.skip("ray[client] is installed here")
    np.save(tmp_path / "rows.npy", digits_x[:10])
    done = run_cli("score", str(tmp_path / "rows.npy"), "--model", str(bundle_dir), "--out",
                   str(tmp_path / "o.parquet"), "--engine", "ray", "--ray-address",
                   "ray://127.0.0.1:10001", "--quiet")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "needs pip install 'ray[client]'" in done.stderr


# -- vae train --engine ray (issue 26): Ray Train on the same two-node cluster ----------------

TRAIN = ["--data", "digits", "--hidden", "32,32", "--latent-dim", "4", "--batch-size", "64",
         "--epochs", "150", "--patience", "150", "--ray-workers", "2", "--quiet"]


def trained_weights(run_dir: Path) -> dict:
    import torch
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def ray_run(cluster, tmp_path_factory):
    pytest.importorskip("ray.train")
    out = tmp_path_factory.mktemp("ray-train") / "run"
    done = run_cli("train", *TRAIN, "--engine", "ray", "--ray-address", cluster, "--out",
                   str(out), env=RAY_ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ray Train, 2 workers × 1 torch thread" in done.stdout
    assert "Traceback" not in done.stderr
    return out


def test_ray_train_on_the_cluster_gives_a_run_whose_bundle_serves(ray_run, tmp_path, digits_x):
    from tests.conftest import served_answer

    done = run_cli("export", str(ray_run), "--out", str(tmp_path / "bundle"))
    assert done.returncode == 0, done.stderr[-2000:]
    answer = served_answer(tmp_path / "bundle", "/anomaly_score",
                           {"x": digits_x[:3].tolist(), "seed": 1})
    assert answer["status"] == 200 and len(answer["score"]) == 3
    history = json.loads((ray_run / "metrics.json").read_text())["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # it learned


def test_ray_train_with_the_same_seed_and_workers_gives_the_same_weights_and_progress(
        ray_run, cluster, tmp_path):
    loud = [a for a in TRAIN if a != "--quiet"]  # and its progress bar, as one process's
    done = run_cli("train", *loud, "--engine", "ray", "--ray-address", cluster, "--out",
                   str(tmp_path / "again"), env=RAY_ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert same_weights(trained_weights(ray_run), trained_weights(tmp_path / "again"))
    bar = done.stderr.replace("\r", "\n").splitlines()
    shown = [line for line in bar if line.startswith("train:") and "best=" in line]
    assert len(shown) >= 2, done.stderr[-2000:]  # it moved while the run went
    assert all(f"{key}=" in shown[-1] for key in ("val", "rows_s", "steps", "skipped")), \
        shown[-1]


SLOW_RECORD = """
import sys, threading, time
import ray
from training.config import TrainConfig
from training.loop import Progress
from training.ray_train import _show_progress

ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote
class SlowRecord:  # its first answer takes longer than the poller's 5 s
    def __init__(self):
        self.calls = 0

    def get(self):
        self.calls += 1
        if self.calls == 1:
            time.sleep(7)
        return {"epoch": self.calls, "train_loss": 1.0, "val_loss": 1.0, "stop_loss": 1.0,
                "skipped_steps": 0, "clipped_steps": 0, "rows_per_s": 1, "best_val": 1.0}

record, done = SlowRecord.remote(), threading.Event()
bar = Progress(TrainConfig(epochs=100, batch_size=64), 0, 640, True)
poller = threading.Thread(target=_show_progress, args=(ray, record, bar, done))
poller.start()
time.sleep(12)
done.set()
poller.join()
bar.close()
"""


def test_the_progress_bar_outlasts_a_record_that_answers_late(cluster):
    """A poll that times out on a busy machine is skipped: the bar shows the records after it
    (it stopped for the rest of the run before)."""
    done = subprocess.run([sys.executable, "-c", SLOW_RECORD, cluster], capture_output=True,
                          text=True, env={**os.environ, **RAY_ENV}, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = [line for line in done.stderr.replace("\r", "\n").splitlines()
             if line.startswith("train:") and "best=" in line]
    assert shown, done.stderr[-2000:]


def test_a_killed_ray_train_worker_is_replaced_and_the_run_ends_the_same(ray_run, cluster,
                                                                        tmp_path):
    """SIGKILL one worker once a checkpoint exists: Ray Train starts the workers again from
    it, and the run ends with the weights of the run that was never interrupted."""
    import psutil

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vae_service.cli", "train", *TRAIN,
                                "--engine", "ray", "--ray-address", cluster, "--out", str(out)],
                               env={**os.environ, **RAY_ENV}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        if list((out / "ray").rglob("checkpoint_*")):
            workers = [p for p in psutil.process_iter(["cmdline"])
                       if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
            if workers:
                killed = workers[-1].pid
                workers[-1].kill()
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=900)
    assert killed is not None, "the run ended before a worker could be killed"
    assert process.returncode == 0, stderr[-3000:]
    assert same_weights(trained_weights(ray_run), trained_weights(out))
