"""``serdistill experiment MANIFEST --config CONFIG -o RUN_DIR``: the paper's whole protocol."""

from __future__ import annotations

import argparse
import shlex
import sys

DESCRIPTION = """\
Run the paper's study on a corpus: K trials (different seeds) of every setting of Table 1
(baseline, teachers' MC ensemble, T-S (test), T-S (unlabeled), T-S (pseudo-label),
T-S (top 75%), with ridge regression and a linear SVR as reference models) and Table 2 (the
ablations of unlabelled data, MC dropout and ensemble size), per attribute.

With --folds K (a small corpus: a few speakers), the labelled speakers are dealt into K
folds and every fold runs the trials with its own speaker-independent split: fold k's
speakers are the test set, fold k+1's the development set, the others train. Results are
given per fold and as mean ± std over folds x trials, with the same paired tests. Teachers and their
Monte-Carlo passes are trained once per trial and
shared by every setting; alpha and beta are chosen on the development set.

RUN_DIR receives the resolved config, versions and seeds, per-trial and per-setting CCC
(results.csv, results.json), and report.md / report.html with Table 1, Table 2, paired
one-tailed t-tests, the consistency histograms (Figure 2), a chart of CCC per setting and
the alpha/beta heat map.

An interrupted experiment resumes: run the same command again; finished trials and
settings are read back, not recomputed. T-S (unlabeled) needs an 'unlabeled' split in
the manifest."""

EPILOG = """\
examples:
  serdistill experiment corpus/manifest.csv --config configs/quick.toml -o runs/quick
  serdistill experiment manifest.csv --config configs/paper.toml -o runs/paper --features features.parquet
  serdistill experiment manifest.csv --config configs/quick.toml -o runs/q --set protocol.trials=5
  serdistill experiment emodb/manifest.csv -o runs/emodb-cv --folds 5 --trials 2
  serdistill experiment manifest.csv --config configs/paper.toml -o /shared/runs/p --engine ray --ray-address auto

See docs/experiment.md for what each setting does and how the work is shared."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` command."""
    from serdistill.runtime.cli.common import add_config_arguments, add_data_arguments, add_engine_arguments

    parser = subparsers.add_parser(
        "experiment",
        help="run the paper's protocol (Table 1, Table 2, significance, report)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest CSV with train, development and test splits")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="RUN_DIR",
        help="run folder (created; an existing one of the same config is resumed)",
    )
    add_config_arguments(parser)
    parser.add_argument("--trials", type=int, metavar="K", help="number of trials (overrides protocol.trials)")
    parser.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="speaker-independent K-fold cross-validation (K >= 3; overrides protocol.folds; "
        "default: the manifest's own splits)",
    )
    parser.add_argument(
        "--settings", metavar="LIST", help="comma-separated settings to run (default: all), e.g. baseline,teachers,ts_test"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_arguments(parser)
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serdistill.runtime.cli.common import engine_from_args, load_config_from_args, load_data_from_args
    from serdistill.study.experiment import run_experiment
    from serdistill.study.report import table1_markdown

    overrides = list(args.set or [])
    if args.trials is not None:
        overrides.append(f"protocol.trials={args.trials}")
    if args.folds is not None:
        overrides.append(f"protocol.folds={args.folds}")
    if args.settings:
        names = [s.strip() for s in args.settings.split(",") if s.strip()]
        overrides.append("protocol.settings=[" + ", ".join(f'"{n}"' for n in names) + "]")
    config = load_config_from_args(args, overrides)
    engine = engine_from_args(args)  # trials as tasks (Ray: extraction chunks too)
    try:
        data = load_data_from_args(args, engine=engine)
        meta = {"manifest": str(args.manifest), "command": "serdistill " + shlex.join(sys.argv[1:])}
        result = run_experiment(data, config, args.output, progress=not args.no_progress, meta=meta, engine=engine)
    finally:
        if engine is not None:
            engine.close()
    print(f"\nReport: {result.report}")
    if len(result.results):
        print(
            table1_markdown(
                result.results,
                alpha=config.protocol.significance,
                not_run=result.not_run,
                cross_validation=bool(config.protocol.folds),
            )
        )
    return 0
