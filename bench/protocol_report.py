"""The report's section on the two protocols (bench/protocols.py), its targets and the recipe
comparison (with the development figures of bench/develop.py beside them)."""

import numpy as np

from bench import tasks
from bench.detectors import PEERS
from bench.protocols import DEFAULT, RECIPES

PROTOCOLS = ("unsupervised", "semi-supervised")


def dataset_of(name: str) -> str:
    return "digits" if name.startswith("digits") else name


def summary(results: dict) -> dict:
    """{protocol: {dataset: {method: [AUROC of each task]}}}; digits pools its ten classes."""
    out: dict = {}
    for task in results["tasks"]:
        per = out.setdefault(task["protocol"], {}).setdefault(dataset_of(task["dataset"]), {})
        for method, value in task["auroc"].items():
            per.setdefault(method, []).append(value)
    return out


def by_share(results: dict, method: str) -> dict:
    """{share: mean AUROC over every data set's unsupervised tasks at that share}."""
    values: dict = {}
    for task in results["tasks"]:
        if task["protocol"] == "unsupervised":
            values.setdefault(task["share"], []).append(task["auroc"][method])
    return {share: float(np.mean(v)) for share, v in sorted(values.items())}


def overall(results: dict, method: str, protocol: str | None = None) -> float:
    """Mean AUROC of a method over the data sets (each data set's tasks averaged first)."""
    s = summary(results)
    protocols = [protocol] if protocol else list(s)
    return float(np.mean([np.mean(s[p][d][method]) for p in protocols for d in s[p]]))


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    unsupervised = summary(results)["unsupervised"]
    rows = []
    for dataset, per in unsupervised.items():
        vae = np.mean(per[DEFAULT])
        peers = {p: np.mean(per[p]) for p in ("IsolationForest", "ECOD")}
        rows.append((f"unsupervised {dataset}: VAE mean AUROC ≥ IsolationForest and ≥ ECOD",
                     f"{vae:.3f} vs {peers['IsolationForest']:.3f}, {peers['ECOD']:.3f}",
                     bool(vae >= max(peers.values()))))
    return rows


def table(per_dataset: dict, methods: list[str]) -> list[str]:
    datasets = list(per_dataset)
    lines = ["| method | " + " | ".join(datasets) + " | mean |",
             "|---|" + "---|" * (len(datasets) + 1)]
    for method in methods:
        means = [float(np.mean(per_dataset[d][method])) for d in datasets]
        best = [max(np.mean(per_dataset[d][m]) for m in methods) for d in datasets]
        cells = [f"**{v:.3f}**" if v >= b else f"{v:.3f}" for v, b in zip(means, best)]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {np.mean(means):.3f} |")
    return lines


def section(results: dict, develop: dict | None) -> str:
    s = summary(results)
    methods = [DEFAULT, *PEERS]
    lines = [
        "## 1. Unlabelled and labelled data: the two protocols", "",
        "**Unsupervised** (ODDS, ADBench): every detector is fitted on all rows of a table "
        f"whose anomalies nobody labelled, {', '.join(f'{s:.0%}' for s in tasks.SHARES)} of "
        "them, and scores those same rows. **Semi-supervised**: fitted on 70% of the normal "
        "rows only, scoring the other 30% and the anomalies. Data: digits (each class as the "
        "anomaly in turn, seed 0), WDBC (malignant), wine (class 2), iris (virginica), and a "
        "synthetic mixture of three correlated Gaussians with ADBench's four anomaly types "
        f"(seeds 0–{results['seeds'] - 1}). AUROC, mean over shares and seeds; the best of "
        "each column in bold. The VAE is `vae train` with its defaults (settings chosen from "
        "the table's shape: Student's t for each cell, `--contamination auto` at 4 robust SDs, "
        "and for a table under 500 training rows about 300 optimizer steps), scored at "
        "K = 16; the peers are "
        "PyOD's, with their defaults, on standardized features.", "",
        "Unsupervised:", "", *table(s["unsupervised"], methods), "",
        "Semi-supervised (digits: section 2's hold-one-out):", "",
        *table(s["semi-supervised"], methods), "",
        "By the anomalies' share (unsupervised, mean over the data sets' tasks):", "",
        "| method | " + " | ".join(f"{x:.0%}" for x in tasks.SHARES) + " |",
        "|---|" + "---|" * len(tasks.SHARES)]
    for method in (DEFAULT, "IsolationForest", "ECOD", "k-NN distance (k = 5)"):
        lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in
                                                   by_share(results, method).values()) + " |")
    lines += ["", "**The training recipes compared** (the default first; mean AUROC over the "
              "data sets, and the mean training seconds of a task). On the right, the same "
              "recipes on the development draws of `bench/develop.py` (other seeds, other "
              "synthetic data, digits classes 1, 8, 9), where they were compared; the report's "
              "own draws, on the left, played no part in choosing. The rows with no figures "
              "on the left were measured on the development draws only: the defaults of "
              "earlier commits, named with the commit, and earlier forms of trimming (with "
              "early stopping on a trimmed validation loss too; "
              "`bench/results/develop.json`).", "",
              "| recipe | unsupervised | semi-supervised | training s | development: "
              "unsupervised | development: semi-supervised |", "|---|---|---|---|---|---|"]
    for recipe in RECIPES:
        seconds = np.mean([t["seconds"][recipe] for t in results["tasks"]])
        dev = develop_means(develop, recipe) if develop else None
        dev_cells = (f"{dev['unsupervised']:.3f} | {dev['semi-supervised']:.3f}" if dev
                     else "— | —")
        lines.append(f"| {recipe} | {overall(results, recipe, 'unsupervised'):.3f} | "
                     f"{overall(results, recipe, 'semi-supervised'):.3f} | {seconds:.1f} | "
                     f"{dev_cells} |")
    for recipe, dev in development_only(develop or {}).items():
        lines.append(f"| {recipe} | — | — | — | {dev['unsupervised']:.3f} | "
                     f"{dev['semi-supervised']:.3f} |")
    return "\n".join(lines) + "\n"


def development_only(develop: dict) -> dict:
    """{recipe: develop_means} of the VAE recipes of the development draws that the report's
    run does not train, by name."""
    names = {m for task in develop.get("tasks", []) for m in task["auroc"]}
    means = {m: develop_means(develop, m) for m in sorted(names - set(RECIPES) - set(PEERS))}
    return {m: dev for m, dev in means.items() if dev is not None}


def develop_means(develop: dict, recipe: str) -> dict | None:
    """A recipe's mean AUROC per protocol on the development draws, each data set's tasks
    averaged first (as `overall` does for the report's)."""
    values: dict = {}
    for task in develop.get("tasks", []):
        if recipe in task["auroc"]:
            per = values.setdefault(task["protocol"], {})
            per.setdefault(dataset_of(task["dataset"]), []).append(task["auroc"][recipe])
    if set(values) != set(PROTOCOLS):
        return None
    return {p: float(np.mean([np.mean(v) for v in per.values()])) for p, per in values.items()}
