"""``serdistill extract MANIFEST -o features.parquet``: openSMILE features of a manifest's files."""

from __future__ import annotations

import argparse

from serdistill.runtime.cli.common import default_workers, positive_int

DESCRIPTION = """\
Extract openSMILE functionals (ComParE_2016, 6,373 values, by default) of every audio
file listed in MANIFEST and write them as a float32 Parquet table indexed by file path.

Each file is read, mixed to mono, resampled to 16 kHz and checked first. Files that are
unreadable, truncated, shorter than --min-duration, silent, without speech (a level
below --min-level: dither, a DC offset), or that give NaN features are rejected: logged, listed in
OUTPUT.rejected.csv (file, kind, reason), and left out
of OUTPUT (--on-error skip), or the run stops at the first one (--on-error raise).

Features are cached by the content of each file and the feature settings, so a rerun,
or a manifest with a few new files, extracts only what is new; an interrupted run keeps
what it finished."""

EPILOG = """\
examples:
  serdistill extract corpus/manifest.csv -o features.parquet
  serdistill extract manifest.csv -o egemaps.parquet --feature-set egemaps --workers 2
  serdistill extract manifest.csv -o features.parquet --no-cache --on-error raise
  serdistill extract manifest.csv -o features.parquet --engine ray --ray-address 10.0.0.1:6379

See docs/features.md for the checks, the cache and the normaliser."""


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0; got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``extract`` command."""
    parser = subparsers.add_parser(
        "extract",
        help="extract openSMILE features of a manifest's audio files",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest CSV (from 'serdistill corpus')")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="Parquet file to write (atomically), e.g. features.parquet"
    )
    parser.add_argument(
        "--feature-set",
        default="compare",
        choices=["compare", "egemaps"],
        help="compare: ComParE_2016, 6,373 values (default, as in the paper); egemaps: eGeMAPSv02, 88 values",
    )
    workers = default_workers()
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=workers,
        metavar="N",
        help=f"processes extracting in parallel (default: the CPUs available, here {workers}; "
        "use fewer on a shared machine)",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature cache folder (default: $SERDISTILL_CACHE/features, else ~/.cache/serdistill/features)",
    )
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument(
        "--on-error",
        choices=["skip", "raise"],
        default="skip",
        help="skip: leave rejected files out and go on (default); raise: stop at the first",
    )
    parser.add_argument(
        "--min-duration",
        type=_seconds,
        default=0.1,
        metavar="SECONDS",
        help="reject files with less audio than this (default: 0.1; openSMILE gives only NaN up to about 0.05)",
    )
    from serdistill.runtime.cli.common import add_audio_check_arguments, add_engine_arguments

    add_audio_check_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    add_engine_arguments(parser, training=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Extract, write OUTPUT and OUTPUT.rejected.csv, print a summary."""
    from serdistill.base.errors import AudioError
    from serdistill.data.features import (
        FeatureSet,
        default_cache_dir,
        extract_manifest,
        rejections_path,
        write_rejections,
    )
    from serdistill.data.manifest import read_manifest
    from serdistill.runtime.cli.common import output_file

    output_file(args.output)
    manifest = read_manifest(args.manifest, require_train=False, label_range=None)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    feature_set = FeatureSet(args.feature_set)
    rejected_csv = rejections_path(args.output)
    from serdistill.runtime.cli.common import engine_from_args

    engine = engine_from_args(args)
    try:
        result = extract_manifest(
            manifest,
            output=None,
            engine=engine,
            feature_set=feature_set,
            cache_dir=cache_dir,
            num_workers=args.workers,
            on_error=args.on_error,
            min_duration=args.min_duration,
            allow_truncated=args.allow_truncated,
            min_level=args.min_level,
            verbose=not args.quiet,
        )
    except AudioError as err:
        rejection = getattr(err, "rejection", None)
        if rejection is not None:
            write_rejections([rejection], rejected_csv)
        raise
    finally:
        if engine is not None:
            engine.close()
    write_rejections(result.rejected, rejected_csv)
    stats = result.stats
    if len(result.features) == 0:
        from serdistill.data.features import FeatureError

        raise FeatureError(
            f"All {stats.files} file(s) of {args.manifest} were rejected (see {rejected_csv}); "
            "expected usable audio; fix the files or the manifest. Nothing was written."
        )
    from serdistill.data.features import write_features

    output = write_features(result.features, args.output)
    cache_note = "no cache" if cache_dir is None else f"cache {cache_dir}"
    print(
        f"{feature_set.value}: {len(result.features)} of {stats.files} file(s), "
        f"{stats.audio_seconds / 3600:.2f} h of audio, {feature_set.dim} features each, "
        f"in {stats.seconds:.1f} s ({stats.extracted} extracted, {stats.cached} from the {cache_note}).\n"
        f"Rejected: {stats.rejected} file(s)"
        + (f", listed in {rejected_csv}" if stats.rejected else f" ({rejected_csv} is empty)")
        + f".\nWrote {output}"
    )
    return 0
