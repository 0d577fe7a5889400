"""`vae evaluate`: how well a bundle's scores separate the normal rows of a labelled file from
its anomalous ones — AUROC, average precision, what the bundle's threshold catches, and the
threshold that would have given the best F1.

Anomalous rows are the positives. Needs scikit-learn and matplotlib (`pip install ".[train]"`).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.tables.files import atomic_write
from serving.core.noise import DEFAULT_SAMPLES
from serving.core.rows import InputError
from serving.tables.labels import DEFAULT_NORMAL_VALUE, read_labelled
from serving.store import load_runtime

RESULT, ROC_PLOT, SCORES_PLOT = "evaluation.json", "roc.png", "scores.png"


def ranking(score: np.ndarray, anomalous: np.ndarray) -> dict:
    """Threshold-free quality of a score: AUROC and average precision."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    return {"auroc": float(roc_auc_score(anomalous, score)),
            "average_precision": float(average_precision_score(anomalous, score))}


def at_threshold(score: np.ndarray, anomalous: np.ndarray, threshold: float) -> dict:
    """What flagging score > threshold catches and costs."""
    flagged = score > threshold
    caught = int((flagged & anomalous).sum())
    precision = caught / max(1, int(flagged.sum()))
    recall = caught / max(1, int(anomalous.sum()))
    false_alarms = int((flagged & ~anomalous).sum()) / max(1, int((~anomalous).sum()))
    return {"threshold": float(threshold), "detection_rate": recall,
            "false_positive_rate": false_alarms,
            "precision": precision,
            "f1": 0.0 if caught == 0 else 2 * precision * recall / (precision + recall)}


def best_f1_threshold(score: np.ndarray, anomalous: np.ndarray) -> float:
    """The threshold (between two observed scores) under which flagging gives the best F1."""
    from sklearn.metrics import precision_recall_curve
    precision, recall, cuts = precision_recall_curve(anomalous, score)  # flags score >= cut
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    below = score[score < cuts[best]]
    # our rule flags score > threshold: put it just under the cut, at the next score down
    return float(below.max()) if below.size else float(np.nextafter(cuts[best], -np.inf))


@dataclass
class Evaluation:
    result: dict  # what evaluation.json holds
    score: np.ndarray  # (N,) per row
    recon_nll: np.ndarray
    anomalous: np.ndarray


def evaluate(model: str | os.PathLike, data: str | os.PathLike, label_column: str,
             normal_value: str | None = None, n_samples: int = DEFAULT_SAMPLES, seed: int = 0,
             threads: int | None = None) -> Evaluation:
    """Score every row of a labelled file with the model (the contract's noise, this seed) and
    measure how the scores separate its normal rows from its anomalous ones."""
    normal_value = DEFAULT_NORMAL_VALUE if normal_value is None else normal_value
    runtime = load_runtime(model, threads)
    table = read_labelled(data, label_column, normal_value, runtime.manifest.feature_names,
                          schema=runtime.schema)
    if not table.anomalous.any():
        raise InputError(f"{data}: every row of label column {label_column!r} is normal; "
                         f"expected some anomalous rows to evaluate against")
    scored = runtime.score(table.x, runtime.noise(seed, n_samples))
    anomalous = table.anomalous
    score = scored.score.astype(np.float64)
    manifest = runtime.manifest
    result = {
        "model": f"{manifest.name}:{manifest.version}", "data": str(data),
        "label_column": label_column, "normal_value": normal_value, "n_samples": n_samples,
        "seed": seed, "rows": len(score), "anomalous_rows": int(anomalous.sum()),
        "score": {**ranking(score, anomalous),
                  "bundle_threshold": at_threshold(score, anomalous, float(runtime.threshold)),
                  "best_f1": at_threshold(score, anomalous, best_f1_threshold(score, anomalous))},
        "recon_nll": ranking(scored.recon_nll, anomalous),
    }
    return Evaluation(result, score, scored.recon_nll, anomalous)


def table(result: dict) -> str:
    """The evaluation as a few aligned lines for the terminal."""
    score = result["score"]
    lines = [f"{result['model']} on {result['data']}: {result['rows']} rows, "
             f"{result['anomalous_rows']} anomalous; n_samples {result['n_samples']}, "
             f"seed {result['seed']}",
             f"{'':26}{'score':>10}{'recon_nll':>11}",
             f"{'AUROC':26}{score['auroc']:10.4f}{result['recon_nll']['auroc']:11.4f}",
             f"{'average precision':26}{score['average_precision']:10.4f}"
             f"{result['recon_nll']['average_precision']:11.4f}",
             "",
             f"{'threshold (score >)':26}{'nats':>10}{'detection':>11}{'false pos.':>11}"
             f"{'precision':>11}{'F1':>7}"]
    for name, key in (("the bundle's", "bundle_threshold"), ("best F1", "best_f1")):
        t = score[key]
        lines.append(f"{name:26}{t['threshold']:10.2f}{t['detection_rate']:11.3f}"
                     f"{t['false_positive_rate']:11.3f}{t['precision']:11.3f}{t['f1']:7.3f}")
    return "\n".join(lines)


def write(evaluation: Evaluation, out: str | os.PathLike) -> Path:
    """evaluation.json, roc.png and scores.png in the directory `out`, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / RESULT,
                 lambda tmp: tmp.write_text(json.dumps(evaluation.result, indent=2) + "\n"))
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import roc_curve

    result, anomalous = evaluation.result, evaluation.anomalous
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, values in (("score", evaluation.score), ("recon_nll", evaluation.recon_nll)):
        fpr, tpr, _ = roc_curve(anomalous, values)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {result[name]['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false-positive rate", ylabel="detection rate", title=result["model"])
    ax.legend(loc="lower right")
    atomic_write(out / ROC_PLOT, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    # Anomalies' scores have a long tail: the axis spans the normal rows' range three times
    # over, and the last bin gathers everything above it.
    lo, hi = np.quantile(evaluation.score[~anomalous], [0.0, 0.99])
    hi = max(hi + 2 * (hi - lo), result["score"]["bundle_threshold"]["threshold"])
    score = np.clip(evaluation.score, None, hi)
    bins = np.histogram_bin_edges(score, bins=60)
    ax.hist(score[~anomalous], bins=bins, alpha=0.6, density=True, label="normal")
    ax.hist(score[anomalous], bins=bins, alpha=0.6, density=True, label="anomalous")
    ax.axvline(result["score"]["bundle_threshold"]["threshold"], color="black", linestyle="--",
               label="the bundle's threshold")
    ax.set(xlabel=f"score (nats, n_samples {result['n_samples']}; scores above {hi:.0f} "
           f"in the last bin)", ylabel="density")
    ax.legend()
    atomic_write(out / SCORES_PLOT, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return out
