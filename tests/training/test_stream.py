"""Issue 26: training rows streamed from a Parquet table larger than training.stream.STREAM_ROWS
(lowered here so that small tables stream)."""

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from serving.core.rows import InputError
from training import stream
from training.config import TrainConfig
from training.stream import RowStream, epoch_batches, open_streamed, read_validation_and_stats
from training.train import load_run, resume, train


def write_table(directory, rows: int, files: int = 3, group: int = 700, seed: int = 0):
    """A directory of Parquet files with uneven row groups; column `id` is the row number."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        n = hi - lo
        latent = rng.normal(size=(n, 2))
        table = pa.table({"id": np.arange(lo, hi, dtype=np.float64),
                          "a": latent[:, 0] + 0.1 * rng.normal(size=n),
                          "b": latent[:, 0] - latent[:, 1], "c": np.exp(latent[:, 1]),
                          "kind": rng.choice(["x", "y", "z"], n)})
        pq.write_table(table, directory / f"part-{i}.parquet", row_group_size=group + 13 * i)
    return directory


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(stream, "STREAM_ROWS", 1000)
    monkeypatch.setattr(stream, "SAMPLE_ROWS", 500)
    monkeypatch.setattr(stream, "VAL_ROWS", 300)


def test_only_tables_over_the_threshold_stream(tmp_path, small_threshold):
    assert open_streamed(write_table(tmp_path / "small", 900), 0, 0.2, None) is None
    metrics = train(TrainConfig(data=str(tmp_path / "small"), epochs=2), tmp_path / "run",
                    progress=False)  # a small directory is read whole
    assert metrics["train_rows"] + metrics["val_rows"] == 900
    table = open_streamed(write_table(tmp_path / "big", 5000), 0, 0.2, None)
    assert table.n_rows == 5000 and len(table.val_index) == 300 and table.n_train == 4700
    assert [c.name for c in table.schema.columns] == ["a", "b", "c", "kind"]  # id: an index
    with pytest.raises(InputError, match="--label-column is not taken"):
        open_streamed(tmp_path / "big", 0, 0.2, "kind")


def test_a_pass_reads_every_training_row_exactly_once(tmp_path, small_threshold):
    # the id column is ignored as an index: read it as a numeric column to follow the rows
    table = open_streamed(write_table(tmp_path / "t", 5000), 0, 0.2, None, numeric=("id",))
    ids = RowStream(table, seed=0, position=0).take(table.n_train)[:, 0]
    assert sorted(ids.astype(int)) == sorted(set(range(5000)) - set(table.val_index))
    again = RowStream(table, seed=0, position=5000).take(table.n_train)[:, 0]  # pass 2
    assert sorted(again) == sorted(ids) and not np.array_equal(again, ids)  # another order
    x_val = read_validation_and_stats(table)
    np.testing.assert_array_equal(x_val[:, 0], table.val_index)
    train_rows = pq.read_table(tmp_path / "t").to_pandas().drop(index=table.val_index)
    low, high = table.clip  # every cell counted once, clipped to the sample's quantiles
    clipped = train_rows[["id", "a", "b"]].clip(low[:3], high[:3], axis=1)
    np.testing.assert_allclose(table.stats["mean"][:3], clipped.mean(), rtol=1e-5)
    np.testing.assert_allclose(table.stats["std"][1], clipped["a"].std(ddof=0), rtol=1e-5)
    # id (whole numbers) and kind (level indices) hold integers only
    assert table.stats["integer"].tolist() == [True, False, False, False, True]


def test_one_huge_cell_does_not_set_a_streamed_columns_scale(tmp_path, small_threshold,
                                                             monkeypatch):
    # the clip quantile scaled to this sample: 1e-4 of 100,000 rows is 1% of 500
    monkeypatch.setattr(stream, "CLIP_QUANTILE", 0.01)
    directory = write_table(tmp_path / "t", 5000)
    plain = open_streamed(directory, 0, 0.2, None)
    read_validation_and_stats(plain)
    part = pq.read_table(directory / "part-1.parquet").to_pandas()
    part.loc[part.index[5], "a"] = 1e6  # a training row's cell (row 1671 is not validation)
    assert 1671 not in plain.val_index
    pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                   directory / "part-1.parquet", row_group_size=713)
    table = open_streamed(directory, 0, 0.2, None)
    read_validation_and_stats(table)
    # unclipped, this cell alone would make the std about 1e6 / sqrt(4700) = 14,600
    assert abs(table.stats["std"][0] / plain.stats["std"][0] - 1) < 0.01


def test_epochs_are_batches_of_the_stream_decided_by_seed_and_epoch(tmp_path, small_threshold):
    table = open_streamed(write_table(tmp_path / "t", 5000), 0, 0.2, None)
    first = list(epoch_batches(table, 0, 3, 1000, 64))
    assert [len(b) for b in first] == [64] * 15 + [64]  # ceil(1000 / 64) batches
    again = list(epoch_batches(table, 0, 3, 1000, 64))
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(first, again))
    other = list(epoch_batches(table, 0, 4, 1000, 64))
    assert not np.array_equal(first[0], other[0], equal_nan=True)


def test_memory_does_not_grow_with_the_rows(tmp_path, small_threshold):
    """The buffer and the chunks read are bounded: numpy's peak allocation over an epoch is the
    same for a table four times larger."""
    peaks = []
    for rows in (5000, 20000):
        table = open_streamed(write_table(tmp_path / str(rows), rows, group=400), 0, 0.2, None)
        tracemalloc.start()
        for epoch in range(3):
            for _ in epoch_batches(table, 0, epoch, 2000, 64):
                pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_a_streamed_run_resumes_to_the_same_weights_and_exports(tmp_path, small_threshold):
    data = write_table(tmp_path / "t", 5000)
    config = TrainConfig(data=str(data), epochs=4, hidden=(16, 16), latent_dim=2, patience=10,
                         batch_size=64, epoch_rows=640, warmup_epochs=1)
    metrics = train(config, tmp_path / "straight", progress=False)
    assert metrics["train_rows"] == 4700 and metrics["val_rows"] == 300
    train(TrainConfig(**{**config.to_dict(), "epochs": 2}), tmp_path / "run", progress=False)
    (tmp_path / "run" / "model.pt").unlink()  # as if stopped after epoch 2
    resume(tmp_path / "run", epochs=4, progress=False)
    resumed, saved = load_run(tmp_path / "run")
    straight, _ = load_run(tmp_path / "straight")
    for (name, a), (_, b) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(a, b), name
    assert saved["x_val"].shape == (300, 4)

    from export.exporter import export_run
    from serving.core.runtime import VAERuntime
    runtime = VAERuntime(export_run(tmp_path / "run", tmp_path / "bundle"), 1)
    rows = pq.read_table(data / "part-0.parquet").slice(0, 5)
    assert np.isfinite(runtime.score(rows, runtime.noise(0, 4)).score).all()
