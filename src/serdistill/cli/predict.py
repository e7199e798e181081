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
The exit status is 0 when at least one file was predicted, 2 when none could be."""

EPILOG = """\
examples:
  serdistill predict emodb.bundle recordings/ -o predictions.csv
  serdistill predict emodb.bundle a.wav b.flac -o - > predictions.csv
  serdistill predict emodb.bundle emodb/manifest.csv --split test -o test.csv --workers 2"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    from serdistill.cli.common import add_audio_check_arguments, default_workers, positive_int

    parser = subparsers.add_parser(
        "predict", help="predict arousal/valence/dominance (with uncertainty) of audio files",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle folder from 'serdistill train'")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="audio files, folders or manifest CSVs")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="the CSV to write, or '-' for stdout")
    parser.add_argument("--split", metavar="NAME", help="for manifest inputs: only the files of this split")
    parser.add_argument("--rejected", metavar="CSV",
                        help="where to list the rejected files (default: OUTPUT.rejected.csv; none for stdout)")
    workers = default_workers()
    parser.add_argument("--workers", type=positive_int, default=workers, metavar="N",
                        help=f"feature extraction processes (default: the CPUs available, here {workers})")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", metavar="DIR",
                       help="feature cache folder (default: $SERDISTILL_CACHE/features, else ~/.cache/serdistill/features)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    add_audio_check_arguments(parser)
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
    from serdistill.io import absolute, working_folder

    files: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*")
                            if p.suffix.lower() in AUDIO_EXTENSIONS and (p.is_file() or _broken_link(p)))
        elif path.suffix.lower() == ".csv" and path.is_file():
            files += _from_csv(path, split)
        else:  # an audio file, or a path that does not exist: the extractor rejects it with the reason
            files.append(str(path))
    cwd = working_folder()
    return list(dict.fromkeys(absolute(f, cwd) for f in files))


def _broken_link(path: Path) -> bool:
    """A symlink that does not lead to a folder: dangling, or part of a loop."""
    try:
        return path.is_symlink() and not path.is_dir()
    except OSError:  # a loop: stat fails
        return True


def _from_csv(path: Path, split: str | None) -> list[str]:
    import pandas as pd

    from serdistill.io import absolute

    from serdistill.errors import ManifestError

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not a readable CSV ({err}).") from None
    if "file" not in table.columns:
        raise ManifestError(f"{path} has no 'file' column (it has {', '.join(table.columns) or 'none'}); "
                            "expected a manifest from 'serdistill corpus', or a CSV listing audio files in 'file'.")
    if split is not None:
        if "split" not in table.columns or not (table["split"] == split).any():
            have = sorted(set(table["split"])) if "split" in table.columns else []
            raise ManifestError(f"{path} has no files in split {split!r} (splits: {have or 'none'}); "
                                "choose one of those, or drop --split.")
        table = table[table["split"] == split]
    base = os.path.dirname(absolute(path))
    return [absolute(f.strip(), base) for f in table["file"] if f.strip()]


def run(args: argparse.Namespace) -> int:
    """Predict, write OUTPUT and its rejected list; report rejections on stderr."""
    from serdistill.bundle import load_bundle
    from serdistill.cli.common import output_file
    from serdistill.errors import AudioError
    from serdistill.features import default_cache_dir, rejections_path, write_rejections
    from serdistill.io import atomic_path

    output_file(args.output)
    if args.rejected:
        output_file(args.rejected)
    bundle = load_bundle(args.bundle, device=args.device)
    files = collect_files(args.inputs, split=args.split)
    if not files:
        raise AudioError(f"No audio files found in {', '.join(args.inputs)} (looked for "
                         f"{' '.join(AUDIO_EXTENSIONS)} in folders); name files, folders or manifest CSVs.")
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    table, rejected = bundle.predict_files(files, cache_dir=cache_dir, workers=args.workers,
                                           verbose=not args.quiet, allow_truncated=args.allow_truncated,
                                           min_level=args.min_level)
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
        raise AudioError(f"None of the {len(files)} file(s) could be used (all rejected"
                         + (f"; see {rejected_csv}" if rejected_csv else "") + "); nothing was written. "
                         "Check that they are speech recordings of at least 0.1 s.")
    outside = bundle.outside_scale(table)
    if outside:
        low, high = bundle.label_range
        print(f"Note: {outside} of {len(table)} file(s) have a prediction outside the label scale {low:g}..{high:g} "
              "the bundle was trained on (not clipped): the model is extrapolating on them.", file=sys.stderr)
    if to_stdout:
        table.to_csv(sys.stdout, index=False, float_format="%.6g")
        sys.stdout.flush()
    else:
        with atomic_path(args.output) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        print(f"Predicted {len(table)} of {len(files)} file(s) with {bundle.path}; wrote {args.output}",
              file=sys.stderr)
    return 0
