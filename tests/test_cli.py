"""`vae` as a user runs it: clear one-line failures, progress and a summary on success."""

import json

from tests.conftest import run_cli, run_cli_here


def test_train_and_export_from_the_command_line(tmp_path):
    from training.train import load_run

    result = run_cli("train", "--data", "breast-cancer", "--epochs", "3", "--hidden", "32",
                     "--latent-dim", "2", "--weight-average", "0.99", "--out",
                     str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "trained breast-cancer: 3 epochs" in result.stdout
    assert "; peak memory " in result.stdout  # issue 26: the run says what it cost
    assert "train: 100%" in result.stderr  # the progress bar, with its losses
    # 3 epochs of a 10-epoch KL warm-up: the limit, not early stopping, ended the run
    longer = f"`vae train --resume --epochs 6 --out {tmp_path / 'run'}` trains on"
    assert f"the epoch limit ended the run at its best epoch; {longer}" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_rows"] + metrics["val_rows"] == 569
    assert not (tmp_path / "run" / "samples.png").exists()  # not image data
    assert load_run(tmp_path / "run")[1]["config"]["weight_average"] == 0.99

    result = run_cli("export", str(tmp_path / "run"), "--out", str(tmp_path / "bundle"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["n_features"] == 30 and manifest["latent_dim"] == 2
    assert manifest["training"]["dataset"] == "breast-cancer"


def test_the_epoch_limit_is_named_only_when_it_ended_the_run(tmp_path):
    small = ("--data", "breast-cancer", "--hidden", "32", "--latent-dim", "2",
             "--warmup-epochs", "1", "--quiet")
    run = str(tmp_path / "limited")
    result = run_cli_here("train", *small, "--epochs", "3", "--out", run)
    assert result.returncode == 0 and "the epoch limit ended the run" in result.stderr
    result = run_cli_here("train", "--resume", "--epochs", "6", "--out", run, "--quiet")
    assert result.returncode == 0, result.stderr  # the command the line gives trains on
    assert 3 < json.loads((tmp_path / "limited" / "metrics.json").read_text())["epochs"] <= 6

    run = str(tmp_path / "stopped")
    result = run_cli_here("train", *small, "--epochs", "300", "--patience", "1", "--out", run)
    metrics = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert result.returncode == 0 and metrics["best_epoch"] < metrics["epochs"] < 300
    assert "epoch limit" not in result.stderr


def test_bad_arguments_fail_in_one_line(tmp_path):
    cases = [
        (["--data", str(tmp_path / "none.csv")], f"{tmp_path / 'none.csv'} does not exist"),
        (["--data", "digts"], "'digts' is neither an embedded data set nor a file"),
    ]
    for args, message in cases:
        result = run_cli_here("train", *args, "--out", str(tmp_path / "run"))
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and message in result.stderr
        assert result.stderr.startswith("vae train: error: ")
    result = run_cli_here("train", "--hidden", "256,x", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "'256,x' is not a list of layer widths" in result.stderr
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n2,y\n")
    result = run_cli_here("train", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "r"),
                          "--numeric", "b")
    assert result.returncode == 1 and "column 'b' row 0 is 'x'; expected a number or an empty " \
        "cell" in result.stderr


def test_a_refused_training_leaves_no_run_directory(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    result = run_cli_here("train", "--data", str(tmp_path / "bad.csv"), "--out",
                          str(tmp_path / "runs" / "new"))
    assert result.returncode == 1 and not (tmp_path / "runs" / "new").exists()


def test_a_score_job_stopped_by_a_bad_row_leaves_no_parts(tmp_path, bundle_dir, digits_x):
    import numpy as np

    x = np.resize(digits_x, (5000, 64)).copy()
    x[4500, 3] = np.inf  # found only once the first chunks are scored
    np.save(tmp_path / "rows.npy", x)
    result = run_cli("score", str(tmp_path / "rows.npy"), "--model", str(bundle_dir), "--out",
                     str(tmp_path / "out.parquet"), "--chunk-rows", "1000")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vae score: error: ") and "row 4500, column 3 is infinite" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy"]  # no parts, no output


def test_the_help_is_whole_sentences():
    """Issue 28: `vae --help` ended mid-sentence ("..., so")."""
    from vae_service.cli import parser

    description = parser().description
    assert description.endswith(".") and "docs/contract.md" in description
