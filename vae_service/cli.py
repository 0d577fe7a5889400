"""`vae`: the command line of docs/contract.md. Each subcommand imports only what it needs, so
`vae score` never loads torch."""

import argparse
import os
import shlex
import sys
from pathlib import Path

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


def run_train(args: argparse.Namespace) -> None:
    from serving.core.rows import InputError
    from training.config import TrainConfig
    from training.train import EVALUATION, resume, train

    if args.resume and args.engine == "ray":
        raise InputError("--resume is for one-process runs; a Ray run resumes by itself when "
                         "a worker dies: start it again to retrain")
    if args.resume:  # the run's own settings; only --epochs may change
        metrics = resume(args.out, args.epochs, progress=not args.quiet, threads=args.threads)
    else:
        if args.normal_value is not None and args.label_column is None:
            raise InputError("--normal-value needs --label-column, the column it is a value of")
        config = TrainConfig(data=args.data, label_column=args.label_column,
                             normal_value=args.normal_value,
                             epochs=args.epochs, latent_dim=args.latent_dim,
                             hidden=args.hidden, batch_size=args.batch_size,
                             patience=args.patience, contamination=args.contamination,
                             outlying=args.outlying, likelihood=args.likelihood,
                             beta=args.beta, warmup_epochs=args.warmup_epochs,
                             weight_average=args.weight_average, seed=args.seed,
                             sampling=not args.no_sampling, numeric=args.numeric,
                             categorical=args.categorical, ignore=args.ignore)
        if args.engine == "ray":
            from training.ray_train import train_on_ray
            metrics = train_on_ray(config, args.out, args.ray_address, args.ray_workers,
                                   args.threads or 1, progress=not args.quiet)
        else:
            metrics = train(config, args.out, progress=not args.quiet, threads=args.threads)
    if args.quiet:  # otherwise said before training began
        print(metrics["chosen"])
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"trained {metrics['dataset']}: {metrics['epochs']} epochs in {metrics['seconds']} s, "
          f"best epoch {metrics['best_epoch']} (early stopping's), validation -ELBO "
          f"{metrics['val_loss']:.3f} nats; peak memory {peak:.0f} MB; run in {args.out}")
    if metrics["best_epoch"] == metrics["epochs"]:  # the limit ended it, not early stopping
        n = 2 * metrics["epochs"]
        longer = (f"training again with --epochs {n}" if args.engine == "ray" else
                  f"`vae train --resume --epochs {n} --out {shlex.quote(str(args.out))}`")
        print(f"vae train: the epoch limit ended the run at its best epoch; {longer} trains "
              f"on, fitting clean rows better but learning more of any anomalies among them "
              f"(docs/training.md: A longer step budget)", file=sys.stderr)
    if "evaluation_rows" in metrics:
        print(f"kept {metrics['evaluation_rows']} rows ({metrics['evaluation_anomalous_rows']} "
              f"anomalous) for evaluation in {Path(args.out) / EVALUATION}")


def run_export(args: argparse.Namespace) -> None:
    from export.exporter import export_run

    bundle = export_run(args.run_dir, args.out, name=args.name, target_fpr=args.target_fpr,
                        threshold=args.threshold, precision=args.precision)
    manifest = bundle.manifest
    refused = (manifest.model_extra.get("quantization") or {}).get("refused")
    if refused:
        print(f"vae export: fp32, since {refused}", file=sys.stderr)
    print(f"exported {manifest.name}:{manifest.version} ({manifest.precision}) to "
          f"{bundle.path} (threshold "
          f"{manifest.calibration.threshold:.3f} nats at "
          f"{manifest.calibration.target_fpr * 100:.3g}% validation false positives)")
    if args.register:
        from export.registry import register
        tag = register(bundle)
        print(f"registered {tag} in the BentoML model store")


def run_score(args: argparse.Namespace) -> None:
    from serving.jobs.local import ScoreJob, run_local

    job = ScoreJob(input=Path(args.input), model=args.model, out=Path(args.out),
                   n_samples=args.n_samples, seed=args.seed, chunk_rows=args.chunk_rows,
                   columns=args.columns, with_latent=args.with_latent)
    if args.engine == "ray":
        from serving.jobs.ray_engine import run_ray
        summary = run_ray(job, address=args.ray_address, threads=args.threads,
                          progress=not args.quiet)
    else:
        summary = run_local(job, threads=args.threads, progress=not args.quiet)
    print(summary.line(job.out))


def run_impute(args: argparse.Namespace) -> None:
    from serving.jobs.impute import impute_file

    rows, seed = impute_file(Path(args.input), args.model, Path(args.out), args.n_samples,
                             args.draws, args.seed, threads=args.threads)
    print(f"imputed {rows} rows into {args.out} (seed {seed})")


def run_evaluate(args: argparse.Namespace) -> None:
    from serving.jobs.evaluate import evaluate, table, write

    evaluation = evaluate(args.model, args.data, args.label_column, args.normal_value,
                          args.n_samples, args.seed)
    print(table(evaluation.result))
    print(f"wrote evaluation.json, roc.png and scores.png to {write(evaluation, args.out)}")


def run_drift(args: argparse.Namespace) -> int:
    from serving.jobs.drift import drift_of_file, write_report

    report = drift_of_file(args.model, args.input, args.threshold, args.threads)
    write_report(report, Path(args.out))
    print("\n".join(report.lines() + [f"wrote drift.json and drift.svg to {args.out}"]))
    return 3 if report.drifted else 0


COMMANDS = {"train": run_train, "export": run_export, "score": run_score,
            "impute": run_impute, "evaluate": run_evaluate, "drift": run_drift}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from serving.core.bundle import BundleError
    from serving.core.rows import InputError

    # OSError: an unreadable file, a read-only directory, a full disk; said in one line
    expected: tuple[type[Exception], ...] = (InputError, BundleError, OSError)
    try:
        if args.command in ("train", "export"):
            from export.verify import ExportError
            from training.train import RunError
            expected += (RunError, ExportError)
        if args.command in ("score", "train") and args.engine == "ray":
            from serving.jobs.ray_engine import ClusterError
            expected += (ClusterError,)
        if args.command == "evaluate":
            import matplotlib  # noqa: F401
            import sklearn  # noqa: F401
    except ImportError as e:
        extra = "evaluate" if args.command == "evaluate" else "train"
        print(f"vae {args.command}: error: {e.name} is not installed; {args.command} needs "
              f"the {extra} extra: pip install '.[{extra}]'", file=sys.stderr)
        return 1
    try:
        status = COMMANDS[args.command](args)
    except expected as e:
        print(f"vae {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = {"train": " (resume with the same command and --resume)",
                "score": " (run the same command again to continue)"}.get(args.command, "")
        print(f"\nvae {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
