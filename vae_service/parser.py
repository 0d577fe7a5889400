"""The `vae` command's argument parser: its subcommands, options and their help (the
synopses of docs/contract.md)."""

import argparse
import os

from vae_service.arguments import (column_names, contamination, decay, finite_weight,
                                   layer_widths, positive, positive_number, seed_number, share,
                                   whole_number)


def parser() -> argparse.ArgumentParser:
    from serving.core.noise import DEFAULT_SAMPLES as K
    from serving.core.scores import LIKELIHOODS
    from training.config import TrainConfig  # dataclasses only: no torch

    top = argparse.ArgumentParser(
        prog="vae", description="Train, export, score, impute, evaluate and watch drift with a "
                                "variational autoencoder (docs/contract.md).")
    commands = top.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a VAE into RUN_DIR")
    train.add_argument("--data", default="digits",
                       help="digits (default), breast-cancer, wine, iris, a .csv/.parquet/.npy "
                            "file or a directory of .parquet files (over 1M rows: streamed)")
    train.add_argument("--label-column", metavar="COL",
                       help="the file's label column: train on the normal rows only and keep "
                            "the others (and a share of the normal ones) for `vae evaluate`")
    train.add_argument("--normal-value", metavar="V",
                       help="the label of the normal rows (0); needs --label-column")
    # unset sizes are chosen from the table's shape (training/sizing.py; docs/training.md)
    for kind, what in (("numeric", "numeric"), ("categorical", "categorical"),
                       ("ignore", "left out (ignored)")):
        train.add_argument(f"--{kind}", type=column_names, default=(), metavar="COL[,COL]",
                           help=f"columns to take as {what}, whatever vae train decides")
    train.add_argument("--epochs", type=positive, help="at most this many epochs")
    train.add_argument("--latent-dim", type=positive)
    train.add_argument("--hidden", type=layer_widths, help="layer widths, e.g. 256,256")
    train.add_argument("--batch-size", type=positive)
    train.add_argument("--patience", type=positive,
                       help="stop after this many epochs without a better validation loss")
    train.add_argument("--contamination", type=contamination,
                       help="for rows with unlabelled anomalies: auto leaves each batch's "
                            "outlying rows out of the loss, a fraction such as 0.05 that "
                            "share, 0 the plain ELBO (default: auto; with --likelihood "
                            "gaussian, auto for tables of fewer than 500 rows, else 0)")
    train.add_argument("--outlying", type=positive_number, metavar="SDS",
                       help="with --contamination auto, its cut: robust standard deviations "
                            "above the batch's median loss (default: 4 with student-t, 5 with "
                            "gaussian)")
    train.add_argument("--likelihood", choices=LIKELIHOODS, default=TrainConfig.likelihood,
                       help="a numeric cell's density given z: student-t (the default, 5 "
                            "degrees of freedom) or gaussian")
    train.add_argument("--beta", type=finite_weight, default=TrainConfig.beta,
                       help=f"KL weight ({TrainConfig.beta:g}, the ELBO)")
    train.add_argument("--warmup-epochs", type=int, default=TrainConfig.warmup_epochs,
                       help=f"KL warm-up epochs ({TrainConfig.warmup_epochs})")
    train.add_argument("--weight-average", type=decay, default=TrainConfig.weight_average,
                       metavar="DECAY",
                       help="decay per step of the moving average of the weights that is "
                            "validated and saved (0.998); 0 keeps the last step's weights")
    train.add_argument("--threads", type=positive,
                       help="torch threads (default: 1 for a network narrower than 256, else "
                            "the CPUs, at most 4)")
    train.add_argument("--seed", type=seed_number, default=0)
    train.add_argument("--no-sampling", action="store_true",
                       help="the deterministic ablation: z = mu, penalty ½‖mu‖²")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="ray: data-parallel on a Ray cluster (Ray Train)")
    train.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray)")
    train.add_argument("--ray-workers", type=positive, default=2,
                       help="Ray Train workers, each with --threads torch threads (2)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--out", required=True, metavar="RUN_DIR")

    export = commands.add_parser("export", help="write the ONNX bundle of a trained run")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--out", required=True, metavar="BUNDLE_DIR")
    export.add_argument("--name", default="vae", help="model name (vae)")
    limit = export.add_mutually_exclusive_group()
    limit.add_argument("--target-fpr", type=share, default=0.01,
                       help="share of validation rows above the anomaly threshold (0.01)")
    limit.add_argument("--threshold", type=finite_weight, metavar="NATS",
                       help="the anomaly threshold itself, in nats (as `vae evaluate`'s best-F1 "
                            "line gives it); the manifest records the share of validation rows "
                            "above it")
    export.add_argument("--precision", choices=("auto", "int8", "fp32"), default="auto",
                        help="int8: graphs with int8 matrix products, exported only if they "
                             "pass the gate against fp32 (docs/training.md); auto (the "
                             "default): int8 where they pass, else fp32")
    export.add_argument("--register", action="store_true",
                        help="also store the bundle in the BentoML model store as NAME:VERSION")
    score = commands.add_parser("score", help="score a file (or a directory of .parquet files)")
    score.add_argument("input", metavar="INPUT", help=".csv, .parquet, .npy or a directory")
    score.add_argument("--model", **model_option())
    score.add_argument("--out", required=True, metavar="OUTPUT",
                       help=".csv, .parquet or .npy: the format follows the extension")
    score.add_argument("--n-samples", type=positive, default=K, help=f"K ({K})")
    score.add_argument("--seed", type=seed_number,
                       help="noise seed (default: a fresh one, printed)")
    score.add_argument("--engine", choices=("local", "ray"), default="local")
    score.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray)")
    score.add_argument("--chunk-rows", type=positive, default=1 << 16,
                       help="rows read and scored at a time (65536)")
    score.add_argument("--columns", type=lambda t: [c for c in t.split(",") if c], default=[],
                       help="input columns to copy to the output, e.g. id,timestamp")
    score.add_argument("--with-latent", action="store_true", help="add mu_0..mu_{D-1}")
    score.add_argument("--threads", type=positive,
                       help="threads scoring chunks side by side (VAE_ORT_THREADS)")
    score.add_argument("--quiet", action="store_true", help="no progress bar")

    impute = commands.add_parser("impute", help="fill a file's missing cells with the model")
    impute.add_argument("input", metavar="INPUT", help=".csv, .parquet or a directory")
    impute.add_argument("--model", **model_option())
    impute.add_argument("--out", required=True, metavar="OUTPUT", help=".csv or .parquet")
    impute.add_argument("--n-samples", type=positive, default=K, help=f"K ({K})")
    impute.add_argument("--draws", type=whole_number, default=0,
                        help="0: each missing cell's expected value; N: N multiple imputations")
    impute.add_argument("--seed", type=seed_number,
                        help="noise seed (default: a fresh one, printed)")
    impute.add_argument("--threads", type=positive,
                        help="threads scoring chunks side by side (VAE_ORT_THREADS)")
    evaluate = commands.add_parser("evaluate", help="AUROC, average precision and detection "
                                   "rates of a model on a labelled file")
    evaluate.add_argument("--model", **model_option())
    evaluate.add_argument("--data", required=True, metavar="FILE", help=".csv, .parquet or .npy")
    evaluate.add_argument("--label-column", required=True, metavar="COL",
                          help="the column saying which rows are normal (an index for .npy)")
    evaluate.add_argument("--normal-value", metavar="V", help="the label of normal rows (0)")
    evaluate.add_argument("--n-samples", type=positive, default=K, help=f"K ({K})")
    evaluate.add_argument("--seed", type=seed_number, default=0, help="noise seed (0)")
    evaluate.add_argument("--out", default="evaluation", metavar="DIR",
                          help="where evaluation.json, roc.png and scores.png go (evaluation)")
    drift = commands.add_parser("drift", help="compare a file's rows with the model's "
                                "reference (PSI per view; exits 3 above the threshold)")
    drift.add_argument("input", metavar="INPUT", help=".csv, .parquet, .npy or a directory")
    drift.add_argument("--model", **model_option())
    drift.add_argument("--threshold", type=float, default=0.25,
                       help="the PSI above which a view has drifted (0.25)")
    drift.add_argument("--out", default="drift", metavar="DIR",
                       help="where drift.json and drift.svg go (drift)")
    drift.add_argument("--threads", type=positive,
                       help="threads scoring chunks side by side (VAE_ORT_THREADS)")
    return top


def model_option() -> dict:
    """--model, which defaults to VAE_MODEL as the service's setting does (an image's own
    model: deploy/image.sh sets it)."""
    model = os.environ.get("VAE_MODEL") or None
    return {"default": model, "required": model is None,
            "help": "bundle directory or model-store tag (default: $VAE_MODEL"
                    + (f", {model})" if model else ", unset)")}
