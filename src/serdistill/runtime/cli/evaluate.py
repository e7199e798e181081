"""``serdistill evaluate BUNDLE MANIFEST --split test``: CCC of students, teachers and baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

KINDS: tuple[str, ...] = ("students", "teachers", "baseline", "ridge", "svr")

DESCRIPTION = """\
Score a bundle on one split of a manifest: the concordance correlation coefficient (CCC)
per attribute of the students' ensemble (the method's prediction), the teachers'
Monte-Carlo ensemble, the baseline, and two linear reference models fitted on the same
normalised training features when the bundle was trained: ridge regression and a linear
SVR (their regularisation chosen on the development split). A deep model means something
only beside a linear one. Each attribute is scored on the files labelled for it; '-' (null
in JSON) where there is no score (no baseline or reference trained, fewer than 2 labelled
files).

Without --features the features are extracted with the bundle's feature set, through the
feature cache. With --json the scores are also written as
{"split", "n", "ccc": {"students": {attribute: value}, "teachers": {...}, "baseline": {...},
"ridge": {...}, "svr": {...}}}."""

EPILOG = """\
examples:
  serdistill evaluate emodb.bundle emodb/manifest.csv
  serdistill evaluate emodb.bundle emodb/manifest.csv --split development --json dev.json
  serdistill evaluate msp.bundle msp.csv --split Test2 --features msp.parquet"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    from serdistill.runtime.cli.common import add_label_arguments, default_workers, positive_int

    parser = subparsers.add_parser(
        "evaluate",
        help="CCC of a bundle's students, teachers and baseline on a manifest split",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle folder from 'serdistill train'")
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest CSV with labels for the split")
    parser.add_argument("--split", default="test", metavar="NAME", help="the split to score (default: test)")
    parser.add_argument(
        "--features", metavar="F", help="feature table from 'serdistill extract' (default: extract, through the cache)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON (atomically)")
    workers = default_workers()
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=workers,
        metavar="N",
        help=f"feature extraction processes (default: the CPUs available, here {workers})",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature cache folder (default: $SERDISTILL_CACHE/features, else ~/.cache/serdistill/features)",
    )
    add_label_arguments(parser, scale_default="the bundle's, 1,7 unless trained with --label-range")
    parser.add_argument("--device", metavar="D", help="cpu, cuda or cuda:N (default: the bundle's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score the split, print a table, write the JSON."""
    from serdistill.base.errors import ManifestError
    from serdistill.base.io import write_json
    from serdistill.data.dataset import load_dataset
    from serdistill.data.manifest import read_manifest
    from serdistill.deploy.bundle import load_bundle
    from serdistill.runtime.cli.common import label_options, output_file

    if args.json:
        output_file(args.json)
    bundle = load_bundle(args.bundle, device=args.device)
    manifest = read_manifest(args.manifest, require_train=False, **label_options(args, bundle.label_range))
    rows = manifest.split(args.split)  # ManifestError naming the splits there are
    data = load_dataset(
        rows,
        features=args.features,
        feature_set=_extractable(bundle.feature_set),
        cache_dir=args.cache_dir,
        workers=args.workers,
        verbose=not args.quiet,
        require_train=False,
    )
    bundle.check_features(
        data.feature_set, data.X.shape[1], data.settings, source=str(args.features or "the extracted features")
    )
    missing = [a for a in bundle.attributes if a not in data.manifest.table.columns]
    if missing:  # pragma: no cover - manifests always have the three attributes
        raise ManifestError(f"Manifest {args.manifest} lacks the column(s) {', '.join(missing)}.")
    y = data.manifest.labels(tuple(bundle.attributes))
    scores = bundle.evaluate(data.X, y)
    result = {"split": args.split, "n": len(data), "ccc": scores}
    labelled = {a: int(n) for a, n in zip(bundle.attributes, (~_isnan(y)).sum(axis=0))}
    print(table(result, labelled, dropped=len(data.dropped)))
    if args.json:
        write_json(args.json, result)
        print(f"Wrote {Path(args.json)}")
    return 0


def _isnan(y: Any) -> Any:
    import numpy as np

    return np.isnan(y)


def _extractable(feature_set: str) -> str:
    from serdistill.data.features import FeatureSet

    try:
        return FeatureSet(feature_set).value
    except ValueError:
        return "compare"


def table(result: dict[str, Any], labelled: dict[str, int], *, dropped: int = 0) -> str:
    """The scores as a small text table."""
    attributes = list(labelled)
    width = max(11, *(len(a) + 2 for a in attributes))
    note = f", {dropped} left out without features" if dropped else ""
    counts = ", ".join(f"{a} {n}" for a, n in labelled.items())
    lines = [
        f"Split {result['split']}: {result['n']} file(s){note}; labelled: {counts}.",
        "CCC".ljust(10) + "".join(a.rjust(width) for a in attributes),
    ]
    for kind in KINDS:
        values = [result["ccc"][kind].get(a) for a in attributes]
        lines.append(kind.ljust(10) + "".join(("-" if v is None else f"{v:.4f}").rjust(width) for v in values))
    return "\n".join(lines)
