"""Mixed tables and missing cells (bench/mixed_tables.py): what `vae train` makes of them as they
come, against the pipeline a user would otherwise build by hand.

    .venv/bin/python -m bench.mixed [--seed 0] [--out bench/results]

- Unsupervised detection (fit on every row, score them): the VAE with its defaults, trained
  from the table as a file (its columns decided by `vae train`), exported, scored by the
  bundle (K = 16); against median (numeric) and most-frequent (text) imputation, one-hot
  levels, standardized, then IsolationForest or k-NN (PyOD's defaults, as bench/detectors.py).
- Imputation, on the blanked cells whose true values are known (the MCAR development tables
  and the generated table): the VAE's E[x_mis | x_obs] (K = 64) against the column mean (mode
  for text) and scikit-learn's IterativeImputer (text as level codes, rounded).
- Calibration under missingness (semi-supervised: `vae train --label-column`, which trains on
  normal rows and keeps a fifth of them and every anomaly for evaluation; bundle at 1%
  nominal false positives): the flag rate of held-out normal rows with 0, 10, 30 and 50% of
  their cells blanked, and the detection rate of anomalies with none and 20% blanked.
Nothing here chose a default: the schema rules and calibration were fixed before it ran.
"""

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import mixed_tables, real_tables
from serving.core.schema import level_key

UNSUPERVISED = ["hypothyroid", "generated",
                *[f"{t} MCAR" for t in real_tables.TABLES],
                *[f"{t} MNAR" for t in real_tables.TABLES]]
CALIBRATED = ["hypothyroid", "generated", "satellite", "satimage-2", "optdigits"]
BLANKED_SHARES = (0.0, 0.1, 0.3, 0.5)
TARGET_FPR = 0.01


def load(name: str):
    """(table, anomalous, truth): truth maps column -> (true values, blanked) where known."""
    if name == "hypothyroid":
        table, anomalous = mixed_tables.hypothyroid()
        return table, anomalous, None
    if name == "generated":
        table, anomalous, known = mixed_tables.generated()
        return table, anomalous, {c: (known["values"][c], known["blank"][c])
                                  for c in known["values"]}
    if name in real_tables.TABLES:
        x, anomalous = real_tables.load(name)
        return mixed_tables.numeric_table(x), anomalous.astype(bool), None
    table_name, how = name.rsplit(" ", 1)
    table, anomalous, x, blank = mixed_tables.blanked(table_name, how)
    truth = {f"f{j}": (x[:, j], blank[:, j]) for j in range(x.shape[1])} if how == "MCAR" \
        else None
    return table, anomalous, truth


def _vae(table: pa.Table, work: Path, seed: int, label: np.ndarray | None = None):
    """Train (on every row, or with a label column on the normal ones), export, load."""
    from pyarrow import parquet

    from export.exporter import export_run
    from serving.store import load_runtime
    from training.config import TrainConfig
    from training.train import train

    data = table if label is None else table.append_column("label", pa.array(label.astype(int)))
    parquet.write_table(data, work / "table.parquet")
    started = time.perf_counter()
    train(TrainConfig(data=str(work / "table.parquet"), seed=seed,
                      label_column=None if label is None else "label"),
          work / "run", progress=False, threads=1)
    seconds = time.perf_counter() - started
    export_run(work / "run", work / "bundle", target_fpr=TARGET_FPR)
    return load_runtime(work / "bundle", threads=1), seconds


def by_hand(table: pa.Table) -> np.ndarray:
    """Median / most-frequent imputation, one-hot levels, standardized: what a user builds."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from pandas.api.types import is_numeric_dtype

    frame = table.to_pandas()
    text = [c for c in frame.columns if not is_numeric_dtype(frame[c])]
    for c in text:  # None, not pandas' NA, for scikit-learn's imputer
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    numbers = [c for c in frame.columns if c not in text]
    numbers = [c for c in numbers if frame[c].notna().any()]
    steps = [("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
              numbers)]
    if text:
        steps.append(("text", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                            OneHotEncoder(handle_unknown="ignore",
                                                          sparse_output=False)), text))
    return np.asarray(ColumnTransformer(steps).fit_transform(frame), np.float64)


def unsupervised(name: str, seed: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from bench.detectors import PEERS
    table, anomalous, truth = load(name)
    with tempfile.TemporaryDirectory() as tmp:
        runtime, seconds = _vae(table, Path(tmp), seed)
        x = runtime.schema.from_arrow(table, name)
        scored = runtime.score(x, runtime.noise(seed, 16))
        result = {"table": name, "rows": table.num_rows, "anomalies": int(anomalous.sum()),
                  "columns": table.num_columns,
                  "missing": float(np.isnan(x).mean()),
                  "categorical": len(runtime.schema.categorical_index),
                  "auroc": {"VAE score": float(roc_auc_score(anomalous, scored.score)),
                            # calibrated at each row's observed count; ties broken by score
                            "VAE percentile": float(roc_auc_score(
                                anomalous, np.lexsort((scored.score, scored.percentile))
                                .argsort()))},
                  "seconds": seconds}
        prepared = by_hand(table)
        for peer, key in (("IsolationForest", "impute + one-hot + IsolationForest"),
                          ("k-NN distance (k = 5)", "impute + one-hot + k-NN")):
            model = PEERS[peer](seed).fit(prepared)
            result["auroc"][key] = float(roc_auc_score(anomalous, model.decision_scores_))
        if truth is not None:
            result["imputation"] = imputation(runtime, table, x, truth, seed)
    return result


def imputation(runtime, table: pa.Table, x: np.ndarray, truth: dict, seed: int) -> dict:
    """RMSE of the blanked numeric cells in units of their column's std, and the share of
    blanked text cells given their true level, for the VAE, mean/mode and IterativeImputer."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    schema = runtime.schema
    filled = {"VAE": runtime.impute(x, 64, seed)}
    mean = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    for j in schema.categorical_index:  # the mode, for level codes
        codes = x[:, j][~np.isnan(x[:, j])].astype(int)
        mean[np.isnan(x[:, j]), j] = np.bincount(codes).argmax()
    filled["mean / mode"] = mean
    iterative = IterativeImputer(max_iter=10, random_state=seed).fit_transform(x)
    for j in schema.categorical_index:
        iterative[:, j] = np.clip(np.round(iterative[:, j]), 0, len(schema.columns[j].levels) - 1)
    filled["IterativeImputer"] = iterative
    out = {}
    for method, rows in filled.items():
        errors, hits = [], []
        for j, column in enumerate(schema.columns):
            if column.name not in truth:
                continue
            values, blank = truth[column.name]
            if not blank.any():
                continue
            if column.kind == "numeric":
                true = values[blank].astype(np.float64)
                errors.append(np.sqrt(np.mean((rows[blank, j] - true) ** 2)) / values.std())
            else:
                names = np.asarray(schema.level_names_of(j, rows[blank, j]))
                true = np.asarray([level_key(v) for v in values[blank]])
                hits.append(np.mean(names == true))
        out[method] = {"rmse_std": float(np.mean(errors)) if errors else None,
                       "accuracy": float(np.mean(hits)) if hits else None}
    return out


def calibration(name: str, seed: int) -> dict:
    from pyarrow import parquet
    from sklearn.metrics import roc_auc_score

    table, anomalous, _ = load(name)
    with tempfile.TemporaryDirectory() as tmp:
        runtime, _ = _vae(table, Path(tmp), seed, label=anomalous)
        held = parquet.read_table(Path(tmp) / "run" / "evaluation.parquet")
        bad = np.asarray(held.column("label").to_pylist()) == 1
        x = runtime.schema.from_arrow(held.drop_columns(["label"]), name)
    rng = np.random.default_rng([seed, 7])
    rates, noise = {}, runtime.noise(seed, 16)
    for share in BLANKED_SHARES:
        rows = x[~bad].copy()
        rows[rng.random(rows.shape) < share] = np.nan
        rows = rows[~np.isnan(rows).all(axis=1)]
        rates[f"{share:.0%}"] = float(runtime.score(rows, noise).is_anomaly.mean())
    detected = {}
    for share in (0.0, 0.2):
        rows = x[bad].copy()
        rows[rng.random(rows.shape) < share] = np.nan
        keep = ~np.isnan(rows).all(axis=1)
        detected[f"{share:.0%}"] = float(runtime.score(rows[keep], noise).is_anomaly.mean())
    scores = runtime.score(x, noise).score
    return {"table": name, "normal_rows": int((~bad).sum()), "anomalies": int(bad.sum()),
            "false_positive_rate": rates, "detection_rate": detected,
            "auroc": float(roc_auc_score(bad, scores))}


def run(seed: int = 0) -> dict:
    jobs = [(unsupervised, name) for name in UNSUPERVISED] + \
        [(calibration, name) for name in CALIBRATED]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_one, [(f, n, seed) for f, n in jobs]))
    return {"seed": seed, "unsupervised": [d for f, d in zip(jobs, done) if f[0] is unsupervised],
            "calibration": [d for f, d in zip(jobs, done) if f[0] is calibration]}


def _one(job):
    function, name, seed = job
    started = time.perf_counter()
    result = function(name, seed)
    print(f"{function.__name__} {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr,
          flush=True)
    return result


def section(results: dict) -> str:
    """The report's section on mixed tables and missing cells."""
    lines = ["## 1b. Tables as they come: categories and missing cells", "",
             f"`python -m bench.mixed` (seed {results['seed']}; part of `make bench`). Tables: "
             "`bench/mixed_tables.py` says how each was built. The VAE is trained from the "
             "table as a file with its defaults (`vae train` decides the columns); the peers "
             "get the preparation a user would write by hand. Nothing here chose a default.",
             "", "**Unsupervised AUROC** (fit on every row, score them):", ""]
    unsup = results["unsupervised"]
    methods = list(unsup[0]["auroc"])
    lines += ["| table | rows, anomalies | missing | categorical | " + " | ".join(methods)
              + " |", "|---" * (4 + len(methods)) + "|"]
    for r in unsup:
        best = max(r["auroc"].values())
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in r["auroc"].values()]
        lines.append(f"| {r['table']} | {r['rows']}, {r['anomalies']} | {r['missing']:.0%} | "
                     f"{r['categorical']} | " + " | ".join(cells) + " |")
    means = [np.mean([r["auroc"][m] for r in unsup]) for m in methods]
    lines.append("| **mean** | | | | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    imputed = [r for r in unsup if "imputation" in r]
    if imputed:
        names = list(imputed[0]["imputation"])
        lines += ["", "**Imputation** of the blanked cells whose values are known: RMSE in "
                  "units of each column's std (lower is better), and for text columns the "
                  "share given their true level:", "",
                  "| table | " + " | ".join(f"{n} RMSE" for n in names) + " | "
                  + " | ".join(f"{n} accuracy" for n in names) + " |",
                  "|---" * (1 + 2 * len(names)) + "|"]
        for r in imputed:
            rmse = [r["imputation"][n]["rmse_std"] for n in names]
            acc = [r["imputation"][n]["accuracy"] for n in names]
            lines.append(f"| {r['table']} | " + " | ".join(_num(v) for v in rmse) + " | "
                         + " | ".join(_num(v) for v in acc) + " |")
    cal = results["calibration"]
    shares = list(cal[0]["false_positive_rate"])
    lines += ["", f"**Calibration under missingness** (trained on normal rows, bundle at "
              f"{TARGET_FPR:.0%} nominal false positives; held-out rows): the flag rate of "
              f"normal rows with a share of their cells blanked at random, and the detection "
              f"rate of anomalies with none and 20% blanked:", "",
              "| table | normal rows, anomalies | " + " | ".join(f"FPR, {s} blanked"
                                                              for s in shares)
              + " | detected | detected, 20% blanked | AUROC |", "|---" * (5 + len(shares))
              + "|"]
    for r in cal:
        lines.append(f"| {r['table']} | {r['normal_rows']}, {r['anomalies']} | "
                     + " | ".join(f"{v:.1%}" for v in r["false_positive_rate"].values())
                     + f" | {r['detection_rate']['0%']:.1%} | {r['detection_rate']['20%']:.1%}"
                       f" | {r['auroc']:.3f} |")
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    results = run(args.seed)
    (args.out / "mixed.json").write_text(json.dumps(results, indent=1) + "\n")
    print(section(results))


if __name__ == "__main__":
    main()
