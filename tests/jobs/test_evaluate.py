"""Label-aware training and `vae evaluate`: labelled files, held-out rows, metrics, errors."""

import json
import re

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import csv, parquet
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import f1_score

from serving.jobs.evaluate import at_threshold, best_f1_threshold, evaluate, ranking
from serving.core.rows import InputError
from serving.tables.labels import read_labelled
from tests.conftest import SMALL, run_cli, run_cli_here


def wdbc_table(labels=None) -> pa.Table:
    """WDBC with a text label column: 'benign' rows are normal."""
    bunch = load_breast_cancer()
    columns = {str(n): bunch.data[:, i] for i, n in enumerate(bunch.feature_names)}
    columns["diagnosis"] = (np.where(bunch.target == 1, "benign", "malignant")
                            if labels is None else labels)
    return pa.table(columns)


@pytest.fixture(scope="module")
def wdbc_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("wdbc") / "wdbc.csv"
    csv.write_csv(wdbc_table(), path)
    return path


@pytest.fixture(scope="module")
def wdbc_run(wdbc_csv, tmp_path_factory):
    from training.config import TrainConfig
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "wdbc"
    config = TrainConfig(data=str(wdbc_csv), label_column="diagnosis", normal_value="benign",
                         **{**SMALL, "epochs": 40})
    train(config, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def wdbc_bundle(wdbc_run, tmp_path_factory):
    from export.exporter import export_run

    out = tmp_path_factory.mktemp("bundles") / "wdbc"
    export_run(wdbc_run, out)
    return out


def test_labels_compare_as_the_column_type(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    for labels, normal, expected in (([0, 1, 0, 2], "0", [0, 1, 0, 1]),
                                     ([0.0, 1.0, 0.0, 0.0], "0", [0, 1, 0, 0]),
                                     (["ok", "bad", "ok", "ok"], "ok", [0, 1, 0, 0]),
                                     ([True, False, True, True], "true", [0, 1, 0, 0])):
        path = tmp_path / "t.parquet"
        parquet.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "y": labels}), path)
        table = read_labelled(path, "y", normal)
        assert table.feature_names == ["a", "b"]
        assert table.anomalous.tolist() == [bool(e) for e in expected]
        assert np.array_equal(table.x, x[:, :2])
    np.save(tmp_path / "t.npy", x)  # .npy: the label column is an index
    table = read_labelled(tmp_path / "t.npy", "1", "1")
    assert table.anomalous.tolist() == [False, True, True, True]
    assert np.array_equal(table.x, x[:, [0, 2]])


@pytest.mark.parametrize("column, normal, message", [
    ("label", None, "has no column 'label'; expected --label-column to be one of"),
    ("diagnosis", "0", "no row of label column 'diagnosis' equals '0' (values: 'benign', "
                       "'malignant')"),
    ("mean radius", "x", "--normal-value 'x' is not a number, but label column 'mean radius'"),
])
def test_bad_label_columns_are_refused_in_one_line(wdbc_csv, column, normal, message):
    with pytest.raises(InputError, match=re.escape(message)):
        read_labelled(wdbc_csv, column, normal)


def test_labelled_training_uses_normal_rows_and_keeps_the_rest(wdbc_run, wdbc_csv):
    metrics = json.loads((wdbc_run / "metrics.json").read_text())
    benign, malignant = 357, 212
    assert metrics["evaluation_anomalous_rows"] == malignant
    held_out_normal = metrics["evaluation_rows"] - malignant
    assert metrics["train_rows"] + metrics["val_rows"] + held_out_normal == benign
    assert held_out_normal == round(benign * 0.2)
    held_out = parquet.read_table(wdbc_run / "evaluation.parquet")
    assert held_out.column_names == wdbc_table().column_names  # features, then the label
    # no row is both trained on and held out: rows are distinct in WDBC
    import torch
    saved = torch.load(wdbc_run / "model.pt", weights_only=True)
    val = {tuple(r) for r in saved["x_val"].numpy().round(3)}
    kept = read_labelled(wdbc_run / "evaluation.parquet", "diagnosis", "benign")
    assert not val & {tuple(r) for r in kept.x.round(3)}


def test_evaluate_metrics_agree_with_scikit_learn(wdbc_bundle, wdbc_run):
    evaluation = evaluate(wdbc_bundle, wdbc_run / "evaluation.parquet", "diagnosis", "benign",
                          n_samples=4, seed=1)
    result, score, anomalous = evaluation.result, evaluation.score, evaluation.anomalous
    assert result["rows"] == len(score) and result["anomalous_rows"] == 212
    assert result["score"]["auroc"] > 0.8  # malignant rows are far from benign ones
    best = result["score"]["best_f1"]
    assert best["f1"] == pytest.approx(f1_score(anomalous, score > best["threshold"]))
    for cut in np.quantile(score, [0.1, 0.5, 0.9]):  # no other cut beats the best-F1 one
        assert f1_score(anomalous, score > cut) <= best["f1"] + 1e-12
    again = evaluate(wdbc_bundle, wdbc_run / "evaluation.parquet", "diagnosis", "benign",
                     n_samples=4, seed=1)
    assert np.array_equal(again.score, score)  # the same seed, the same scores


def test_threshold_metrics_on_known_scores():
    score = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.35])
    anomalous = np.array([False, False, False, True, True, True])
    assert ranking(score, anomalous) == {"auroc": 1.0, "average_precision": 1.0}
    at = at_threshold(score, anomalous, 0.5)
    assert (at["detection_rate"], at["false_positive_rate"], at["precision"]) == (2 / 3, 0, 1)
    assert best_f1_threshold(score, anomalous) == pytest.approx(0.3)  # flags 0.35 and up


def test_evaluate_from_the_command_line(wdbc_bundle, wdbc_run, tmp_path):
    out = tmp_path / "eval"
    done = run_cli("evaluate", "--model", str(wdbc_bundle), "--data",
                   str(wdbc_run / "evaluation.parquet"), "--label-column", "diagnosis",
                   "--normal-value", "benign", "--n-samples", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "AUROC" in done.stdout and "best F1" in done.stdout
    result = json.loads((out / "evaluation.json").read_text())
    expected = evaluate(wdbc_bundle, wdbc_run / "evaluation.parquet", "diagnosis", "benign",
                        n_samples=2, seed=0).result
    assert result["n_samples"] == 2 and result["score"] == expected["score"]
    for png in ("roc.png", "scores.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_a_data_set_without_anomalies_is_refused(wdbc_bundle, tmp_path):
    path = tmp_path / "clean.parquet"
    parquet.write_table(wdbc_table(labels=np.zeros(569, dtype=np.int64)), path)
    with pytest.raises(InputError, match="every row of label column 'diagnosis' is normal; "
                                         "expected some anomalous rows"):
        evaluate(wdbc_bundle, path, "diagnosis")
    done = run_cli_here("evaluate", "--model", str(wdbc_bundle), "--data", str(path),
                   "--label-column", "diagnosis", "--out", str(tmp_path / "e"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "every row" in done.stderr
    assert not (tmp_path / "e").exists()


def test_label_training_errors_are_one_line(wdbc_csv, tmp_path):
    cases = [
        (["--data", "digits", "--label-column", "y"], "--label-column needs a .csv, .parquet"),
        (["--data", str(wdbc_csv), "--normal-value", "benign"], "--normal-value needs "
                                                                 "--label-column"),
        (["--data", str(wdbc_csv), "--label-column", "kind"], "has no column 'kind'"),
        (["--data", str(wdbc_csv), "--label-column", "diagnosis", "--normal-value", "B"],
         "no row of label column 'diagnosis' equals 'B'"),
    ]
    for args, message in cases:
        done = run_cli_here("train", *args, "--out", str(tmp_path / "run"))
        assert done.returncode == 1, args
        assert done.stderr.startswith("vae train: error: ") and message in done.stderr, \
            done.stderr
        assert done.stderr.count("\n") == 1
