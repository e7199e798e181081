"""``serdistill predict BUNDLE INPUT... -o predictions.csv``: arousal, valence, dominance of audio files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")

DESCRIPTION = """\
Predict arousal, valence and dominance of audio files with a trained bundle: the mean of
the N students, and their spread (std over the students) as the uncertainty.

INPUT is any mix of audio files, folders (searched recursively for .wav .flac .ogg .mp3)
and manifest CSVs (their 'file' column, relative paths resolved against the CSV's folder).
Audio is mixed to mono and resampled to 16 kHz; features come from the feature cache when
present.

OUTPUT is a CSV (written atomically; '-' for stdout) with the columns file, one per
attribute, <attribute>_std and duration (seconds). Predictions are not clipped to the
label scale the bundle was trained on (1..7 unless trained with --label-range): a value
outside it says the model is extrapolating, and a note on stderr counts them. Files that
cannot be used (unreadable, truncated, shorter than 0.1 s, silent, no speech: a level
below --min-level) are reported on stderr and listed in OUTPUT.rejected.csv (file, kind,
reason), dangling and looping symlinks in folders included; they do not stop the run.
The exit status is 0 when at least one file was predicted, 2 when none could be.

Long recordings (podcasts, calls, interviews): files longer than --segment-over seconds
(default 30), or every file with --segments, are streamed through a voice-activity
detector (Silero VAD, shipped inside its package) and cut into speech segments of 1 to 10 s
(--segment-bounds); every segment is predicted, and OUTPUT gets the columns file, start,
end (seconds), one per attribute and <attribute>_std, one row per segment (files predicted
whole get start 0 and end = their duration). --plot DIR draws one PNG per segmented file:
the three attributes over time with their uncertainty bands (needs matplotlib)."""

EPILOG = """\
examples:
  serdistill predict emodb.bundle recordings/ -o predictions.csv
  serdistill predict emodb.bundle podcast.flac -o timeline.csv --plot plots/
  serdistill predict emodb.bundle a.wav b.flac -o - > predictions.csv
  serdistill predict emodb.bundle emodb/manifest.csv --split test -o test.csv --workers 2"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    from serdistill.runtime.cli.common import add_audio_check_arguments, default_workers, positive_int

    parser = subparsers.add_parser(
        "predict",
        help="predict arousal/valence/dominance (with uncertainty) of audio files",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle folder from 'serdistill train'")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="audio files, folders or manifest CSVs")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="the CSV to write, or '-' for stdout")
    parser.add_argument("--split", metavar="NAME", help="for manifest inputs: only the files of this split")
    parser.add_argument(
        "--categories",
        action="store_true",
        help="add the nearest emotion word (category, category_distance) by the NRC-VAD norms: "
        "a heuristic read-out of the three numbers, not a trained classifier (distance "
        "in the VAD space normalised to 0..1 per attribute)",
    )
    parser.add_argument(
        "--labels",
        action="store_true",
        help="for manifest inputs: add their labels beside the predictions (<attribute>_label)",
    )
    parser.add_argument(
        "--rejected", metavar="CSV", help="where to list the rejected files (default: OUTPUT.rejected.csv; none for stdout)"
    )
    workers = default_workers()
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=workers,
        metavar="N",
        help=f"feature extraction processes (default: the CPUs available, here {workers})",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature cache folder (default: $SERDISTILL_CACHE/features, else ~/.cache/serdistill/features)",
    )
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    add_audio_check_arguments(parser)
    segments = parser.add_argument_group("long recordings")
    choice = segments.add_mutually_exclusive_group()
    choice.add_argument("--segments", action="store_true", help="cut every file into speech segments")
    choice.add_argument("--no-segments", action="store_true", help="predict every file whole, however long")
    segments.add_argument(
        "--segment-over",
        type=float,
        default=30.0,
        metavar="S",
        help="cut files longer than S seconds into speech segments (default: 30)",
    )
    segments.add_argument(
        "--segment-bounds", default="1,10", metavar="MIN,MAX", help="shortest and longest segment in seconds (default: 1,10)"
    )
    segments.add_argument("--plot", metavar="DIR", help="one PNG per segmented file in DIR: the attributes over time")
    parser.add_argument("--device", metavar="D", help="cpu, cuda or cuda:N (default: the bundle's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def collect_files(inputs: list[str], *, split: str | None = None) -> list[str]:
    """The audio files named by ``inputs`` (files, folders, manifest CSVs): absolute, once each, in order.

    In folders, symlinks with an audio extension that lead nowhere (dangling, or a loop)
    are kept, so that extraction rejects and reports them like any unusable file.

    Raises:
        ManifestError: a CSV input has no ``file`` column, or no rows in ``split``.
    """
    from serdistill.base.io import absolute, working_folder

    files: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(
                str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and (p.is_file() or _broken_link(p))
            )
        elif path.suffix.lower() == ".csv" and path.is_file():
            files += _from_csv(path, split)
        else:  # an audio file, or a path that does not exist: the extractor rejects it with the reason
            files.append(str(path))
    cwd = working_folder()
    return list(dict.fromkeys(absolute(f, cwd) for f in files))


def with_labels(table, inputs: list[str], attributes: list[str]):
    """``table`` with ``<attribute>_label`` columns from the manifest CSVs among ``inputs`` (NaN elsewhere)."""
    import numpy as np
    import pandas as pd

    from serdistill.base.io import absolute

    labels: dict[str, list[float]] = {}
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() != ".csv" or not path.is_file():
            continue
        frame = pd.read_csv(path, dtype={"file": str})
        base = os.path.dirname(absolute(path))
        for row in frame.itertuples(index=False):
            labels[absolute(str(row.file).strip(), base)] = [float(getattr(row, a, np.nan)) for a in attributes]
    values = np.array([labels.get(f, [np.nan] * len(attributes)) for f in table["file"]], dtype=float)
    values = values.reshape(len(table), len(attributes))
    table = table.copy()
    for j, attribute in enumerate(attributes):
        table.insert(table.columns.get_loc(attribute) + 1, f"{attribute}_label", values[:, j])
    return table


def _segment_options(text: str):
    from serdistill.base.errors import ConfigError
    from serdistill.data.segments import SegmentOptions

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--segment-bounds is MIN,MAX in seconds (e.g. 1,10); got {text!r}.") from None
    return SegmentOptions(min_seconds=low, max_seconds=high)


def _merge(whole, timeline, files: list[str]):
    """One table: segment rows, and rows of files predicted whole (start 0, end = duration), in input order."""
    import pandas as pd

    if whole is not None and len(whole):
        whole = whole.rename(columns={"duration": "end"})
        whole.insert(1, "start", 0.0)
        timeline = pd.concat([whole[timeline.columns], timeline], ignore_index=True)
    order = {f: i for i, f in enumerate(files)}
    timeline = timeline.assign(_order=timeline["file"].map(order))
    return timeline.sort_values(["_order", "start"], kind="stable").drop(columns="_order").reset_index(drop=True)


def plot_timelines(timeline, folder: str, *, label_range: tuple[float, float] = (1.0, 7.0)) -> list[Path]:
    """One PNG per file of a segment table: each attribute over time, mean with a +-1 std band."""
    from serdistill.study.plots import timeline_plot

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return [
        timeline_plot(rows, out / f"{Path(file).stem}.png", title=Path(file).name, label_range=label_range)
        for file, rows in timeline.groupby("file", sort=False)
    ]


def _broken_link(path: Path) -> bool:
    """A symlink that does not lead to a folder: dangling, or part of a loop."""
    try:
        return path.is_symlink() and not path.is_dir()
    except OSError:  # a loop: stat fails
        return True


def _from_csv(path: Path, split: str | None) -> list[str]:
    import pandas as pd

    from serdistill.base.errors import ManifestError
    from serdistill.base.io import absolute

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not a readable CSV ({err}).") from None
    if "file" not in table.columns:
        raise ManifestError(
            f"{path} has no 'file' column (it has {', '.join(table.columns) or 'none'}); "
            "expected a manifest from 'serdistill corpus', or a CSV listing audio files in 'file'."
        )
    if split is not None:
        if "split" not in table.columns or not (table["split"] == split).any():
            have = sorted(set(table["split"])) if "split" in table.columns else []
            raise ManifestError(
                f"{path} has no files in split {split!r} (splits: {have or 'none'}); choose one of those, or drop --split."
            )
        table = table[table["split"] == split]
    base = os.path.dirname(absolute(path))
    return [absolute(f.strip(), base) for f in table["file"] if f.strip()]


def run(args: argparse.Namespace) -> int:
    """Predict, write OUTPUT and its rejected list; report rejections on stderr."""
    from serdistill.base.errors import AudioError
    from serdistill.base.io import atomic_path
    from serdistill.data.features import default_cache_dir, rejections_path, write_rejections
    from serdistill.deploy.bundle import load_bundle
    from serdistill.runtime.cli.common import output_file

    output_file(args.output)
    if args.rejected:
        output_file(args.rejected)
    bundle = load_bundle(args.bundle, device=args.device)
    files = collect_files(args.inputs, split=args.split)
    if not files:
        raise AudioError(
            f"No audio files found in {', '.join(args.inputs)} (looked for "
            f"{' '.join(AUDIO_EXTENSIONS)} in folders); name files, folders or manifest CSVs."
        )
    from serdistill.data.audio import declared_duration

    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    options = _segment_options(args.segment_bounds)
    long = (
        set()
        if args.no_segments
        else set(files)
        if args.segments
        else {f for f in files if declared_duration(f, 0.0) > args.segment_over}  # unreadable: whole, then rejected
    )
    checks = {"allow_truncated": args.allow_truncated, "min_level": args.min_level}
    whole = [f for f in files if f not in long]
    table, rejected = (
        bundle.predict_files(whole, cache_dir=cache_dir, workers=args.workers, verbose=not args.quiet, **checks)
        if whole
        else (None, [])
    )
    if long:
        timeline, more = bundle.predict_segments(
            [f for f in files if f in long], options=options, workers=args.workers, verbose=not args.quiet, **checks
        )
        table = _merge(table, timeline, files)
        rejected = rejected + more
        if args.plot:
            for path in plot_timelines(timeline, args.plot, label_range=bundle.label_range):
                print(f"Plotted {path}", file=sys.stderr)
    assert table is not None  # files is not empty: some were predicted whole or in segments
    to_stdout = args.output == "-"
    rejected_csv = args.rejected or (None if to_stdout else rejections_path(args.output))
    if rejected_csv is not None:
        rejected_csv = write_rejections(rejected, rejected_csv)
    if rejected:
        where = f", listed in {rejected_csv}" if rejected_csv else ""
        lines = [f"Rejected {len(rejected)} of {len(files)} file(s){where}:"]
        lines += [f"  {r.file}: {r.kind}: {r.reason}" for r in rejected]
        print("\n".join(lines), file=sys.stderr)
    if len(table) == 0:
        raise AudioError(
            f"None of the {len(files)} file(s) could be used (all rejected"
            + (f"; see {rejected_csv}" if rejected_csv else "")
            + "); nothing was written. "
            "Check that they are speech recordings of at least 0.1 s."
        )
    if args.labels:
        table = with_labels(table, args.inputs, bundle.attributes)
    if args.categories:
        from serdistill.data.corpora.norms import load_norms

        table = table.copy()
        table["category"], table["category_distance"] = load_norms().nearest(table, label_range=bundle.label_range)
    outside = bundle.outside_scale(table)
    if outside:
        low, high = bundle.label_range
        print(
            f"Note: {outside} of {len(table)} file(s) have a prediction outside the label scale {low:g}..{high:g} "
            "the bundle was trained on (not clipped): the model is extrapolating on them.",
            file=sys.stderr,
        )
    if to_stdout:
        table.to_csv(sys.stdout, index=False, float_format="%.6g")
        sys.stdout.flush()
    else:
        with atomic_path(args.output) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        what = f"{len(table)} segment(s) of" if long else f"{len(table)} of"
        print(f"Predicted {what} {len(files)} file(s) with {bundle.path}; wrote {args.output}", file=sys.stderr)
    return 0
