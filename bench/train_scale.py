"""Training a large table: today's step-budget defaults beside the epoch-floor defaults they
replaced, on one generated table, in one run (issue 26).

    .venv/bin/python -m bench.train_scale [--rows 2000000] [--skip-before]

The table: ROWS × 30, five latent factors, five heavy-tailed columns (Student t, 1.5 degrees of
freedom) and three log-normal ones, as a float32 .npy. Each run is `vae train` in a fresh
process: its wall time, its best validation loss and its own peak RSS (ru_maxrss). "Before" is the old rule, given as flags: batch 64, every
row every epoch, at least 30 epochs, learning rate 1e-3.
Target: the default reaches a validation loss within 1% of before's, in at most 90 s.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_SECONDS, TARGET_LOSS = 90.0, 0.01
BEFORE = ["--batch-size", "64", "--epochs", "30", "--patience", "10"]  # with the config below


def table(rows: int, path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, "w+", np.float32, (rows, 30))
    mixing = rng.normal(size=(5, 30))
    for lo in range(0, rows, 1 << 18):
        hi = min(rows, lo + (1 << 18))
        block = rng.normal(size=(hi - lo, 5)) @ mixing + 0.3 * rng.normal(size=(hi - lo, 30))
        block[:, :5] = 3 * rng.standard_t(1.5, size=(hi - lo, 5))
        block[:, 5:8] = np.exp(rng.normal(0, 2, size=(hi - lo, 3)))
        out[lo:hi] = block
    out.flush()
    return path


def run(data: Path, out: Path, extra: list[str], config: dict | None = None) -> dict:
    """`vae train` in a fresh process: its seconds, peak RSS and best validation loss."""
    code = ("import sys; from training.config import TrainConfig; from training.train import "
            "train; m = train(TrainConfig(data=sys.argv[1], **eval(sys.argv[3])), sys.argv[2], "
            "progress=False); import json; print(json.dumps({k: m[k] for k in ('val_loss', "
            "'epochs', 'best_epoch', 'seconds', 'chosen')} | {'skipped': m['history'][-1]"
            "['skipped_steps'], 'clipped': m['history'][-1]['clipped_steps'], 'peak_rss_mb': __import__('resource')"
            ".getrusage(__import__('resource').RUSAGE_SELF).ru_maxrss // 1024}))")
    options = dict(config or {})
    for flag, value in zip(extra[::2], extra[1::2]):
        options[flag.lstrip("-").replace("-", "_")] = int(value)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(data), str(out), repr(options)],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--skip-before", action="store_true", help="only today's defaults")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = table(args.rows, Path(tmp) / "big.npy")
        now = run(data, Path(tmp) / "now", [])
        print(f"defaults: {now}", flush=True)
        if args.skip_before:
            return
        before = run(data, Path(tmp) / "before", BEFORE,
                     {"learning_rate": 1e-3, "epoch_rows": 0})
        print(f"before (epoch floor): {before}", flush=True)
    gap = (now["val_loss"] - before["val_loss"]) / abs(before["val_loss"])
    print(f"time {now['wall_seconds']} s against {before['wall_seconds']} s "
          f"({before['wall_seconds'] / now['wall_seconds']:.1f}x); validation loss "
          f"{now['val_loss']:.3f} against {before['val_loss']:.3f} ({gap:+.2%})")
    print(f"target: at most {TARGET_SECONDS:.0f} s: "
          f"{'met' if now['wall_seconds'] <= TARGET_SECONDS else 'NOT met'}; within "
          f"{TARGET_LOSS:.0%} of before's loss: {'met' if gap <= TARGET_LOSS else 'NOT met'}")


if __name__ == "__main__":
    main()
