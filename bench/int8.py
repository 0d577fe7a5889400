"""int8 against fp32, side by side in one run (issue 27).

    .venv/bin/python -m bench.int8 [--run runs/digits] [--seconds 3]

Exports the run twice (fp32, and `--precision int8`), then for each bundle: in-process scoring
at K = 1 and 16 (rows/s, one thread), `vae score` of a 200,000-row .npy in a fresh process
(rows/s and peak RSS, the default threads), each the median of three turns in which the two
precisions alternate; one-row latency at K = 16 (median of many calls), and the gate's figures
(score difference, AUROC against shuffled rows). It also times the network's own matrix products
at K = 16: in fp32 (numpy's BLAS, one thread: bench.speed's roofline) and in int8
(onnxruntime's MatMulInteger, uint8 × int8, one thread), and prints each target as met or not.
Then, on the development draws (seed 100), each real table trained and exported in both
precisions: the held-out AUROC and false-positive rate of each (--no-quality: not this part).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import RESULTS, rate
from bench.speed import gemm_roofline
from serving.core.threads import SAMPLE_ROWS
from serving.store import load_runtime

TARGETS = {"in-process K = 16": 2.0, "vae score": 1.8}
JOB_ROWS = 200_000
PRECISIONS = ("fp32", "int8")
ROUNDS = 3  # each speed figure is the median of this many turns, the precisions alternating


def int8_roofline(sizes: dict, n_features: int, k: int, seconds: float) -> float:
    """Rows per second that the network's matrix products allow in int8: onnxruntime's
    MatMulInteger (uint8 activations, int8 weights) for every layer, one thread."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    hidden, latent = list(sizes["hidden"]), sizes["latent_dim"]
    batch = max(1, SAMPLE_ROWS // k)
    encoder = [n_features, *hidden, 2 * latent]
    decoder = [latent, *hidden[::-1], 2 * n_features]
    nodes, inputs, outputs, feeds = [], [], [], {}
    rng = np.random.default_rng(0)
    for rows, widths in ((batch, encoder), (batch * k, decoder)):
        for a, b in zip(widths[:-1], widths[1:]):
            i = len(nodes)
            inputs += [helper.make_tensor_value_info(f"x{i}", TensorProto.UINT8, [rows, a]),
                       helper.make_tensor_value_info(f"w{i}", TensorProto.INT8, [a, b])]
            outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT32, [rows, b]))
            nodes.append(helper.make_node("MatMulInteger", [f"x{i}", f"w{i}"], [f"y{i}"]))
            feeds[f"x{i}"] = rng.integers(0, 255, (rows, a), dtype=np.uint8)
            feeds[f"w{i}"] = rng.integers(-127, 127, (a, b), dtype=np.int8)
    model = helper.make_model(helper.make_graph(nodes, "gemms", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return rate(lambda: session.run(None, feeds), batch, seconds)


def job(bundle: Path, rows: Path, out: Path) -> dict:
    """`vae score` in a fresh process under /usr/bin/time: rows/s and peak RSS."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", sys.executable, "-m",
                           "vae_service.cli", "score", str(rows), "--model", str(bundle),
                           "--out", str(out), "--seed", "1", "--quiet"], capture_output=True,
                          text=True, check=True)
    seconds = time.perf_counter() - started
    peak = int(re.search(r"maxrss (\d+)", done.stderr).group(1)) / 1024
    return {"rows_per_s": JOB_ROWS / seconds, "peak_rss_mb": round(peak)}


def latency_ms(runtime, x: np.ndarray, calls: int = 2000) -> float:
    times = []
    for i in range(calls):
        started = time.perf_counter()
        runtime.score(x[i % len(x):i % len(x) + 1], runtime.noise(1, 16))
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def dev_quality(seed: int = 100) -> dict:
    """int8 against fp32 on the development draws (seed 100; never the report's): each real
    table's semi-supervised split, trained with the defaults on its normal rows and exported
    in both precisions. The held-out rows' AUROC, and the share of held-out normal rows each
    bundle's threshold flags (calibrated at 1%). An export the gate refuses says so."""
    from sklearn.metrics import roc_auc_score

    from bench import real_tables, tasks
    from export.exporter import export_run
    from export.verify import ExportError
    from training.config import TrainConfig
    from training.train import train

    out = {}
    for table in real_tables.TABLES:
        task = tasks.semi_supervised(table, seed, real=True)
        figures = {}
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            np.save(tmp / "fit.npy", task.fit)
            train(TrainConfig(data=str(tmp / "fit.npy"), seed=seed), tmp / "run",
                  progress=False, threads=1)
            for precision in ("fp32", "int8"):
                try:
                    bundle = export_run(tmp / "run", tmp / precision, precision=precision)
                except ExportError as e:
                    figures[precision] = {"refused": str(e)}
                    continue
                runtime = load_runtime(bundle.path, threads=1)
                scored = runtime.score(task.score, runtime.noise(0, 16))
                figures[precision] = {
                    "auroc": float(roc_auc_score(task.anomalous, scored.score)),
                    "fpr": float(scored.is_anomaly[~task.anomalous].mean())}
        out[table] = figures
        print(f"  {table}: " + "; ".join(
            f"{p} " + (f"AUROC {f['auroc']:.4f}, FPR {f['fpr']:.1%}" if "auroc" in f
                       else "refused by the gate") for p, f in figures.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/digits"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-quality", action="store_true",
                        help="not the development tables' AUROC and FPR")
    args = parser.parse_args()
    results = run(args.run, args.seconds, quality=not args.no_quality)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int8.json").write_text(json.dumps(results, indent=1) + "\n")


def export_both(run_dir: Path, tmp: Path) -> tuple[dict, str | None]:
    """run_dir's bundle in each precision, and the gate's refusal of its int8 graphs (None if
    they pass): refused, they are written all the same (export_run's gated=False), so that the
    graphs `vae export` would have refused can still be timed beside fp32's."""
    from export.exporter import export_run

    bundles = {"fp32": export_run(run_dir, tmp / "fp32", precision="fp32"),
               "int8": export_run(run_dir, tmp / "int8", precision="int8", gated=False)}
    return bundles, bundles["int8"].manifest.model_extra["quantization"].get("refused")


def run(run_dir: Path = Path("runs/digits"), seconds: float = 3.0,
        quality: bool = True) -> dict:
    """Both precisions of run_dir side by side, and (quality) on the development tables: what
    `make bench` keeps in results/int8.json."""
    from sklearn.datasets import load_digits
    from training.train import load_run

    x = np.resize(load_digits().data.astype(np.float32), (JOB_ROWS, 64))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "rows.npy", x)
        bundles, results["refused"] = export_both(run_dir, tmp)
        runtimes = {p: load_runtime(bundles[p].path, threads=1) for p in PRECISIONS}
        timings = {p: {} for p in PRECISIONS}
        for _ in range(ROUNDS):  # the precisions take turns: the machine's drift hits both
            for p, runtime in runtimes.items():
                for k in (1, 16):
                    timings[p].setdefault(f"in-process K = {k}", []).append(rate(
                        lambda k=k: runtime.score(x[:20_000], runtime.noise(1, k)), 20_000,
                        seconds))
                scored = job(bundles[p].path, tmp / "rows.npy", tmp / f"{p}.npy")
                timings[p].setdefault("vae score", []).append(scored["rows_per_s"])
                timings[p].setdefault("vae score peak RSS MB", []).append(scored["peak_rss_mb"])
        for p in PRECISIONS:
            figures = {name: float(np.median(values)) for name, values in timings[p].items()}
            figures["one-row latency ms, K = 16"] = latency_ms(runtimes[p], x)
            figures["gate"] = bundles[p].manifest.model_extra.get("quantization")
            figures["version"] = bundles[p].manifest.version
            results[p] = figures
            print(p, json.dumps({k: v for k, v in figures.items() if k != "gate"}), flush=True)
    sizes = load_run(run_dir)[1]["config"]
    results["roofline"] = {"fp32 K = 16": gemm_roofline(sizes, 64, 16, seconds),
                           "int8 K = 16": int8_roofline(sizes, 64, 16, seconds)}
    fp32, int8 = results["fp32"], results["int8"]
    roof = results["roofline"]
    print(f"GEMM rooflines at K = 16: fp32 {roof['fp32 K = 16']:.0f} rows/s (in-process fp32 "
          f"at {fp32['in-process K = 16'] / roof['fp32 K = 16']:.2f}x), int8 "
          f"{roof['int8 K = 16']:.0f} rows/s (in-process int8 at "
          f"{int8['in-process K = 16'] / roof['int8 K = 16']:.2f}x)")
    print(f"gate: {int8['gate']}")
    verdicts = {}
    for name, target in TARGETS.items():
        ratio = int8[name] / fp32[name]
        verdicts[f"{name}: int8 >= {target}x fp32"] = (ratio, ratio >= target)
    verdicts["vae score memory no higher"] = (
        int8["vae score peak RSS MB"] / fp32["vae score peak RSS MB"],
        int8["vae score peak RSS MB"] <= fp32["vae score peak RSS MB"] * 1.02)
    verdicts["one-row latency no worse"] = (
        int8["one-row latency ms, K = 16"] / fp32["one-row latency ms, K = 16"],
        int8["one-row latency ms, K = 16"] <= fp32["one-row latency ms, K = 16"] * 1.05)
    results["targets"] = {k: {"ratio": v, "met": m} for k, (v, m) in verdicts.items()}
    for name, (value, met) in verdicts.items():
        print(f"  {'met    ' if met else 'NOT MET'} {name}: {value:.2f}")
    if quality:
        print("development tables (seed 100, semi-supervised):", flush=True)
        results["development"] = dev_quality()
        pairs = [t for t in results["development"].values() if "auroc" in t.get("int8", {})]
        auroc = max(abs(t["int8"]["auroc"] - t["fp32"]["auroc"]) for t in pairs)
        fpr = max(abs(t["int8"]["fpr"] - t["fp32"]["fpr"]) for t in pairs)
        refused = len(results["development"]) - len(pairs)
        results["targets"]["development tables: AUROC within 0.002 of fp32's"] = {
            "ratio": auroc, "met": auroc <= 0.002 and not refused}
        results["targets"]["development tables: FPR within 1 point of fp32's"] = {
            "ratio": fpr, "met": fpr <= 0.01 and not refused}
        print(f"  largest AUROC gap {auroc:.4f}, largest FPR gap {fpr:.2%}, refused by the gate: "
              f"{refused}")
    return results


if __name__ == "__main__":
    main()
