"""`vae`: the command line of docs/contract.md. Each subcommand imports only what it needs, so
`vae score` never loads torch."""

import argparse
import shlex
import sys
from pathlib import Path

from vae_service.parser import parser


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
