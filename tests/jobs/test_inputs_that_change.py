"""Batch inputs that change, collide or mislead (issue 24, #13-#18): each fails in one line."""

import os
import threading
import time

import numpy as np
import pytest

from tests.conftest import run_cli, run_cli_here


def when_scoring(out, action):
    """Run action once the job on `out` has saved its first part (it is then mid-run)."""
    def wait_then_act():
        parts = out.with_name(f".{out.name}.parts")
        deadline = time.monotonic() + 120
        while not any(parts.glob("part-*.arrow")) and time.monotonic() < deadline:
            time.sleep(0.01)
        action()
    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


def test_an_input_rewritten_during_the_run_fails_in_one_line(tmp_path, bundle_dir, digits_x):
    """#13: a rewrite in place (same size) while the job runs is caught at the end."""
    rows = tmp_path / "rows.npy"
    np.save(rows, np.resize(digits_x, (200_000, 64)))
    out = tmp_path / "out.parquet"

    def rewrite():
        with open(rows, "r+b") as f:  # dd conv=notrunc: the same size, new content
            f.seek(1 << 20)
            f.write(os.urandom(1 << 16))
    writer = when_scoring(out, rewrite)
    done = run_cli("score", str(rows), "--model", str(bundle_dir), "--out", str(out),
                   "--chunk-rows", "2000", "--seed", "1")
    writer.join()
    assert done.returncode == 1, done.stderr[-500:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("vae score: error: ") and "changed while it was scored" in last
    assert not out.exists()


def test_an_input_truncated_during_the_run_fails_in_one_line(tmp_path, bundle_dir, digits_x):
    """#14: read with plain reads, a truncated .npy is an error, not SIGBUS."""
    rows = tmp_path / "rows.npy"
    np.save(rows, np.resize(digits_x, (200_000, 64)))

    cutter = when_scoring(tmp_path / "out.parquet", lambda: os.truncate(rows, 1 << 20))
    done = run_cli("score", str(rows), "--model", str(bundle_dir), "--out",
                   str(tmp_path / "out.parquet"), "--chunk-rows", "2000")
    cutter.join()
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("vae score: error: ")
    assert "truncated while it was read" in last or "changed while it was scored" in last
    assert not (tmp_path / ".out.parquet.lock").exists()


def test_the_output_may_not_be_the_input(tmp_path, bundle_dir, digits_x):
    """#15: `vae score x.csv --out x.csv` would replace the rows with their scores."""
    np.save(tmp_path / "x.npy", digits_x[:10])
    done = run_cli_here("score", str(tmp_path / "x.npy"), "--model", str(bundle_dir), "--out",
                        str(tmp_path / "x.npy"))
    assert done.returncode == 1 and "is the input file" in done.stderr
    assert np.load(tmp_path / "x.npy").shape == (10, 64)


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path, bundle_dir,
                                                                digits_x):
    """#15: temporary outputs are created exclusively under fresh names."""
    np.save(tmp_path / "x.npy", digits_x[:10])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / ".out.csv.tmp")
    done = run_cli_here("score", str(tmp_path / "x.npy"), "--model", str(bundle_dir), "--out",
                        str(tmp_path / "out.csv"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me" and (tmp_path / "out.csv").is_file()


def test_one_seed_range_everywhere():
    """#17: the service takes seeds up to 2**63 - 1; so does the command line."""
    done = run_cli_here("score", "x.npy", "--model", "m", "--out", "o.csv", "--seed",
                        str(2**64))
    assert done.returncode == 2 and "is not a seed from 0 to 2**63 - 1" in done.stderr


@pytest.mark.parametrize("make, message", [
    (lambda p: os.mkfifo(p / "rows.csv"), "is a FIFO; expected a .csv file"),
    (lambda p: (p / "rows.csv").write_bytes(b"a" * (5 << 20) + b"\n1\n"),
     "has no complete header row in its first block"),
    (lambda p: np.save(p / "rows.csv.npy", np.zeros((3, 64), np.float32))
     or os.replace(p / "rows.csv.npy", p / "rows.csv"), "holds .npy bytes but is named .csv"),
    (lambda p: (p / "rows.csv").write_bytes(b"pixel_0_0\xff,b\n1,2\n"),
     "has a header that is not UTF-8 text"),
    (lambda p: np.savez(p / "rows", a=np.zeros(3)) or os.replace(p / "rows.npz",
                                                                  p / "rows.npy"),
     "is an .npz archive (numpy.savez), not a .npy array"),
])
def test_inputs_that_mislead_get_messages_that_do_not(tmp_path, bundle_dir, make, message):
    """#18 and #5: a FIFO, a huge header, binary bytes under another name, a non-UTF-8
    header, an .npz named .npy: each one line, none echoing the file's bytes."""
    make(tmp_path)
    name = "rows.npy" if "npz" in message else "rows.csv"
    done = run_cli_here("score", str(tmp_path / name), "--model", str(bundle_dir), "--out",
                        str(tmp_path / "out.parquet"))
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
