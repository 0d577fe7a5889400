"""`vae score`: formats, column matching, bad inputs, chunking, resume, and the Ray engine."""

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.jobs.local import ScoreJob, run_local
from serving.core.rows import InputError
from tests.conftest import ROOT, run_cli
from tests.http.test_service import run


def rows(digits_x, n=2500):
    jitter = np.random.default_rng(0).normal(0, 0.3, (n, 64)).astype(np.float32)
    return np.resize(digits_x, (n, 64)) + jitter


def write(path: Path, x: np.ndarray, names: list[str], extra: dict | None = None) -> Path:
    if path.suffix == ".npy":
        np.save(path, x)
        return path
    columns = {**{n: x[:, i] for i, n in enumerate(names)}, **(extra or {})}
    if path.suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    else:
        from pyarrow import csv
        csv.write_csv(pa.table(columns), path)
    return path


def read(path: Path) -> dict:
    if path.suffix == ".npy":
        records = np.load(path)
        return {n: records[n] for n in records.dtype.names}
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    else:
        from pyarrow import csv
        table = csv.read_csv(path)
    return {n: table[n].to_numpy(zero_copy_only=False) for n in table.column_names}


def score(tmp_path, source, out_name, bundle_dir, **options) -> dict:
    job = ScoreJob(input=source, model=str(bundle_dir), out=tmp_path / out_name,
                   **{"seed": 3, **options})
    summary = run_local(job, progress=False)
    assert summary.rows > 0
    return read(tmp_path / out_name)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_each_format_scores_like_the_runtime(tmp_path, runtime, digits_x, bundle_dir, suffix):
    x = rows(digits_x)
    names = runtime.manifest.feature_names
    order = list(range(63, -1, -1))  # named columns in another order: matched by name
    source = write(tmp_path / f"in{suffix}", x if suffix == ".npy" else x[:, order],
                   names if suffix == ".npy" else [names[i] for i in order])
    out = score(tmp_path, source, f"out{suffix}", bundle_dir, chunk_rows=1000, n_samples=8)
    expected = runtime.score(x, runtime.noise(3, 8))
    np.testing.assert_array_equal(out["row"], np.arange(len(x)))
    np.testing.assert_allclose(out["score"], expected.score, rtol=1e-6 if suffix == ".csv" else 0)
    np.testing.assert_array_equal(out["is_anomaly"], expected.is_anomaly)


def test_a_directory_of_parquet_files_with_passthrough_and_latent(tmp_path, runtime, digits_x,
                                                                  bundle_dir):
    x = rows(digits_x)
    names = runtime.manifest.feature_names
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, (lo, hi) in enumerate([(0, 700), (700, 1900), (1900, 2500)]):
        write(folder / f"p{i}.parquet", x[lo:hi], names,
              {"id": [f"r{j}" for j in range(lo, hi)]})
    out = score(tmp_path, folder, "out.parquet", bundle_dir, chunk_rows=512, columns=["id"],
                with_latent=True)
    expected = runtime.score(x, runtime.noise(3, 16), with_latent=True)
    np.testing.assert_array_equal(out["score"], expected.score)
    np.testing.assert_array_equal(out["mu_3"], expected.mu[:, 3])
    assert list(out["id"][:2]) == ["r0", "r1"] and out["id"][-1] == "r2499"


def test_answers_equal_the_services(tmp_path, service, runtime, digits_x, bundle_dir):
    x = rows(digits_x, 300)
    out = score(tmp_path, write(tmp_path / "in.npy", x, []), "out.npy", bundle_dir, seed=21)
    answer = run(service.anomaly_score(x.tolist(), n_samples=16, seed=21))
    assert out["score"].tolist() == answer.score
    assert out["percentile"].tolist() == answer.percentile


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".npy"])
def test_output_bytes_do_not_depend_on_chunk_size(tmp_path, runtime, digits_x, bundle_dir, suffix):
    source = write(tmp_path / "in.parquet", rows(digits_x), runtime.manifest.feature_names)
    outputs = []
    for chunk in (65536, 1000, 333):
        job = ScoreJob(input=source, model=str(bundle_dir), out=tmp_path / f"c{chunk}{suffix}",
                       seed=5, chunk_rows=chunk)
        run_local(job, progress=False)
        outputs.append((tmp_path / f"c{chunk}{suffix}").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


BAD = [
    (lambda d, n: write(d / "a.csv", np.zeros((3, 64)), n[:-1]), {}, 
     "lacks 1 of the model's 64 feature columns ('pixel_7_7')"),
    (lambda d, n: write(d / "a.parquet", np.zeros((3, 64)), n, {"pixel_0_0": ["a", "b", "c"]}),
     {}, "column 'pixel_0_0' is string, not numeric"),
    (lambda d, n: write(d / "a.parquet", np.zeros((3, 64)), n), {"columns": ["id"]},
     "has no column 'id' to pass through (--columns)"),
    (lambda d, n: write(d / "a.npy", np.zeros((3, 60)), n), {},
     "has 60 columns; this model expects 64 (taken by position from a .npy file)"),
    (lambda d, n: write(d / "a.npy", np.zeros((3, 64)), n), {"columns": ["id"]},
     "has no column names; --columns needs a .csv or .parquet input"),
    (lambda d, n: write(d / "a.parquet", np.where(np.arange(192).reshape(3, 64) == 130, np.inf,
                                                  0.0), n), {},
     "column 'pixel_0_2' row 2 is infinite (or beyond float32's range); expected finite numbers"),
    (lambda d, n: write(d / "a.parquet", np.where(np.arange(192).reshape(3, 64) // 64 == 1,
                                                  np.nan, 0.0), n), {},
     "row 1 has no observed cell"),
    (lambda d, n: write(d / "a.csv", np.zeros((3, 64)), n), {"out": "scores.txt"},
     "--out"),
    (lambda d, n: d / "missing.parquet", {}, "missing.parquet does not exist"),
    (lambda d, n: (d / "empty").mkdir() or d / "empty", {},
     "is a directory without .parquet files"),
    (lambda d, n: write(d / "a.parquet", np.zeros((3, 64)), n, {"score": [1, 2, 3]}),
     {"columns": ["score"]}, "--columns score would overwrite an output column"),
]


@pytest.mark.parametrize("make,options,message", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_inputs_fail_before_scoring_in_one_line(tmp_path, runtime, bundle_dir, make, options,
                                                    message):
    source = make(tmp_path, runtime.manifest.feature_names)
    out = tmp_path / options.pop("out", "scores.parquet")
    with pytest.raises(InputError, match=None) as error:
        run_local(ScoreJob(input=source, model=str(bundle_dir), out=out, seed=1, **options),
                  progress=False)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not out.exists()


def test_a_killed_job_leaves_no_output_and_resumes_to_identical_bytes(tmp_path, runtime,
                                                                      digits_x, bundle_dir):
    x = np.resize(rows(digits_x), (120_000, 64))
    source = write(tmp_path / "in.npy", x, [])
    out = tmp_path / "out.parquet"
    args = ["score", str(source), "--model", str(bundle_dir), "--out", str(out), "--seed", "9",
            "--chunk-rows", "4000", "--n-samples", "32", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "vae_service.cli", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = tmp_path / ".out.parquet.parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.arrow"))) < 3 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not out.exists()
    finished_before = len(list(parts.glob("part-*.arrow")))
    assert 3 <= finished_before < 30

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "scored 120000 rows" in resumed.stdout and not parts.exists()
    straight = run_cli(*[a if a != str(out) else str(tmp_path / "straight.parquet")
                         for a in args])
    assert straight.returncode == 0, straight.stderr
    assert out.read_bytes() == (tmp_path / "straight.parquet").read_bytes()


def test_changed_arguments_start_over(tmp_path, runtime, digits_x, bundle_dir):
    source = write(tmp_path / "in.npy", rows(digits_x), [])
    out = tmp_path / "out.npy"
    from serving.jobs.local import resume_or_start
    job = ScoreJob(input=source, model=str(bundle_dir), out=out, seed=1)
    parts, _ = resume_or_start(job, runtime)
    parts.save(0, pa.table({"row": [0]}))  # a stale part of another job's arguments
    run_local(ScoreJob(input=source, model=str(bundle_dir), out=out, seed=2), progress=False)
    expected = runtime.score(rows(digits_x), runtime.noise(2, 16)).score
    np.testing.assert_array_equal(read(out)["score"], expected)


def test_cli_summary_and_seed(tmp_path, runtime, digits_x, bundle_dir):
    source = write(tmp_path / "in.csv", rows(digits_x, 500), runtime.manifest.feature_names)
    result = run_cli("score", str(source), "--model", str(bundle_dir), "--out",
                     str(tmp_path / "o.csv"))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("scored 500 rows, ") and "rows/s, seed " in line
    seed = int(line.split("seed ")[1].split()[0])
    np.testing.assert_allclose(read(tmp_path / "o.csv")["score"],
                               runtime.score(rows(digits_x, 500), runtime.noise(seed, 16)).score,
                               rtol=1e-6)
    bad = run_cli("score", str(source), "--model", str(tmp_path), "--out", str(tmp_path / "x.csv"))
    assert bad.returncode == 1 and bad.stderr.startswith("vae score: error: ")
    assert "has no manifest.json" in bad.stderr and bad.stderr.count("\n") == 1


def test_ray_engine_matches_the_local_engine(tmp_path, runtime, digits_x, bundle_dir):
    pytest.importorskip("ray")
    x = rows(digits_x, 3000)
    names = runtime.manifest.feature_names
    source = write(tmp_path / "in.parquet", x, names, {"id": np.arange(3000) * 7})
    common = ["--model", str(bundle_dir), "--seed", "4", "--chunk-rows", "700", "--columns",
              "id", "--quiet"]
    ray_run = run_cli("score", str(source), "--out", str(tmp_path / "ray.parquet"),
                      "--engine", "ray", *common, timeout=600)
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    assert "scored 3000 rows" in ray_run.stdout
    local = run_cli("score", str(source), "--out", str(tmp_path / "local.parquet"), *common)
    assert local.returncode == 0, local.stderr
    scored = pq.read_table(tmp_path / "ray.parquet")
    np.testing.assert_array_equal(scored["id"].to_numpy(), scored["row"].to_numpy() * 7)
    assert scored.equals(pq.read_table(tmp_path / "local.parquet"))


def test_csv_pass_through_columns_keep_their_text_in_both_engines(tmp_path, runtime,
                                                                  digits_x, bundle_dir):
    x = rows(digits_x, 300)
    stamps = [f"2024-01-{1 + i % 28:02d}T00:00:{i % 60:02d}" for i in range(300)]
    codes = [f"{i:05d}" for i in range(300)]  # leading zeros: a number would lose them
    source = write(tmp_path / "in.csv", x, runtime.manifest.feature_names,
                   {"ts": pa.array(stamps), "code": pa.array(codes)})
    common = ["--model", str(bundle_dir), "--seed", "2", "--columns", "ts,code", "--quiet"]
    engines = [[]] + ([["--engine", "ray"]] if importlib.util.find_spec("ray") else [])
    outputs = []
    for i, engine in enumerate(engines):
        done = run_cli("score", str(source), "--out", str(tmp_path / f"out{i}.csv"), *common,
                       *engine, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        from pyarrow import csv
        table = csv.read_csv(tmp_path / f"out{i}.csv", convert_options=csv.ConvertOptions(
            column_types={"ts": pa.string(), "code": pa.string()}))
        assert table["ts"].to_pylist() == stamps and table["code"].to_pylist() == codes
        outputs.append((tmp_path / f"out{i}.csv").read_bytes())
    assert all(out == outputs[0] for out in outputs)  # the Ray output equals the local one


def test_a_second_job_on_the_same_output_is_refused(tmp_path, bundle_dir, digits_x):
    import fcntl

    source = write(tmp_path / "in.npy", rows(digits_x, 100), [])
    out = tmp_path / "out.parquet"
    with open(tmp_path / ".out.parquet.lock", "a") as held:  # as a running job holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match=r"another vae score is writing .*out.parquet"):
            run_local(ScoreJob(input=source, model=str(bundle_dir), out=out), progress=False)
    assert not out.exists()
    run_local(ScoreJob(input=source, model=str(bundle_dir), out=out), progress=False)
    assert out.exists() and not (tmp_path / ".out.parquet.lock").exists()


def test_an_input_rewritten_in_place_restarts_the_job_and_says_why(tmp_path, runtime,
                                                                   digits_x, bundle_dir,
                                                                   capsys):
    """Same size, same mtime, other rows: the parts of the old rows must not be reused."""
    import os

    x = rows(digits_x, 3000)
    source = write(tmp_path / "in.npy", x, [])
    out = tmp_path / "out.npy"
    from serving.jobs.chunk import score_chunk
    from serving.jobs.local import resume_or_start
    job = ScoreJob(input=source, model=str(bundle_dir), out=out, seed=3, chunk_rows=1000)
    parts, state = resume_or_start(job, runtime)
    parts.save(0, score_chunk(runtime, 0, x[:1000], None, 16, 3))  # as a killed job left it
    stat = source.stat()
    np.save(source, x[::-1].copy())  # other rows, the same size
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    run_local(job, progress=False)
    assert "starting over: the saved parts were of another job (input_sha256 changed)" in \
        capsys.readouterr().err
    expected = runtime.score(x[::-1], runtime.noise(3, 16)).score
    np.testing.assert_array_equal(read(out)["score"], expected)


@pytest.mark.parametrize("make_out,message", [
    (lambda d: (d / "dir.parquet").mkdir() or d / "dir.parquet", "is a directory; expected a file"),
    (lambda d: d / "missing" / "o.parquet", "does not exist"),
])
def test_a_bad_output_place_is_refused_before_scoring(tmp_path, bundle_dir, digits_x, make_out,
                                                      message):
    source = write(tmp_path / "in.npy", rows(digits_x, 10), [])
    with pytest.raises(InputError, match=message):
        run_local(ScoreJob(input=source, model=str(bundle_dir), out=make_out(tmp_path)),
                  progress=False)
