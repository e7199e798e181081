"""``serdistill corpus NAME ROOT -o manifest.csv``: turn a corpus folder into a manifest."""

from __future__ import annotations

import argparse

from serdistill.data.corpora.registry import RECIPES

_EPILOG_TAIL = """\
options by recipe:
  msp-podcast               --min-duration, --max-duration, --paper-durations
  emodb, ravdess, cremad    --seed, --split-proportions, --norms
  synthetic                 --seed, --split-proportions, --n-files, --num-workers

examples:
  serdistill corpus emodb -o emodb.csv                        # the EmoDB copy shipped with serdistill
  serdistill corpus emodb path/to/emodb -o emodb.csv
  serdistill corpus msp-podcast /data/MSP-Podcast -o msp.csv --paper-durations
  serdistill corpus synthetic demo/corpus -o demo/corpus/manifest.csv --n-files 240

Categorical corpora get arousal/valence/dominance targets on 1..7 from the NRC-VAD word
norms (packaged; see docs/corpora.md), scaled around 'neutral' by how strongly each file
expresses its emotion. The synthetic corpus is a pipeline demonstration, not emotional speech.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``corpus`` subcommand."""
    recipes = "\n".join(f"  {r.name:<12} {r.summary}\n  {'':<12} ROOT: {r.layout}" for r in RECIPES.values())
    parser = subparsers.add_parser(
        "corpus",
        help="build a manifest from a corpus folder (msp-podcast, emodb, ravdess, cremad, synthetic)",
        description="Build a validated manifest (file, speaker, split, arousal, valence, dominance, ...) "
        "from a corpus folder, and print what it holds.",
        epilog=f"recipes:\n{recipes}\n\n{_EPILOG_TAIL}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", choices=list(RECIPES), help=f"the recipe: {', '.join(RECIPES)}")
    parser.add_argument(
        "root",
        metavar="ROOT",
        nargs="?",
        default=None,
        help="the corpus folder (for synthetic: where to generate it); emodb without ROOT uses "
        "the copy shipped with serdistill",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="CSV",
        help="where to write the manifest (paths in it are relative to its folder)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the speaker split (default 0)")
    parser.add_argument(
        "--split-proportions",
        default=None,
        metavar="TRAIN,DEV,TEST",
        help="shares of the speakers per split, for corpora without splits (default 0.6,0.2,0.2)",
    )
    parser.add_argument(
        "--norms",
        default=None,
        metavar="CSV",
        help="your own norms table (emotion,valence,arousal,dominance on 1..7); default NRC-VAD v1.0",
    )
    parser.add_argument(
        "--min-duration", type=float, default=None, metavar="S", help="msp-podcast: drop segments shorter than S seconds"
    )
    parser.add_argument(
        "--max-duration", type=float, default=None, metavar="S", help="msp-podcast: drop segments longer than S seconds"
    )
    parser.add_argument(
        "--paper-durations", action="store_true", help="msp-podcast: keep 2.75..11 s segments, as in the paper"
    )
    parser.add_argument(
        "--n-files", type=int, default=None, metavar="N", help="synthetic: number of files to generate (default 240)"
    )
    parser.add_argument(
        "--num-workers", type=int, default=None, metavar="N", help="synthetic: espeak-ng processes at once (default 2)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the manifest, write it, print a summary; returns the exit code."""
    from serdistill.base.errors import CorpusError
    from serdistill.data.corpora import build_manifest, summarize

    options: dict[str, object] = {}
    if args.seed is not None:
        options["seed"] = args.seed
    if args.split_proportions is not None:
        options["proportions"] = _proportions(args.split_proportions)
    if args.norms is not None:
        options["norms"] = args.norms
    if args.paper_durations:
        if args.min_duration is not None or args.max_duration is not None:
            raise CorpusError(
                "--paper-durations sets 2.75..11 s; got it together with "
                "--min-duration/--max-duration. Use one or the other."
            )
        from serdistill.data.corpora.msp_podcast import PAPER_DURATIONS

        options["min_duration"], options["max_duration"] = PAPER_DURATIONS
    if args.min_duration is not None:
        options["min_duration"] = args.min_duration
    if args.max_duration is not None:
        options["max_duration"] = args.max_duration
    if args.n_files is not None:
        options["n_files"] = args.n_files
    if args.num_workers is not None:
        options["num_workers"] = args.num_workers
    manifest = build_manifest(args.name, args.root, **options)
    path = manifest.write(args.output)
    print(f"Wrote {path}")
    print(summarize(manifest))
    return 0


def _proportions(text: str) -> tuple[float, ...]:
    from serdistill.base.errors import CorpusError

    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise CorpusError(f"--split-proportions must be three numbers like 0.6,0.2,0.2; got {text!r}.") from None
