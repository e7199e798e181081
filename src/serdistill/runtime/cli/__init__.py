"""The ``serdistill`` command. Each subcommand lives in its own module of this package.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments and returning an exit code. Modules
import heavy libraries inside those functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from serdistill import __version__
from serdistill.base.errors import SerdistillError

# Subcommands in the order --help lists them; a module missing here is simply not offered.
COMMANDS = ("corpus", "extract", "train", "predict", "evaluate", "experiment", "export", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serdistill",
        description=(
            "Speech emotion recognition (arousal, valence, dominance) with an ensemble of "
            "students taught by Monte-Carlo-dropout teachers (Sridhar & Busso, Interspeech 2020, "
            "doi:10.21437/Interspeech.2020-2694)."
        ),
        epilog="Run 'serdistill COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"serdistill {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"serdistill.runtime.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"serdistill.runtime.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except SerdistillError as err:
        print(f"serdistill {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"serdistill {args.command}: interrupted; finished work is kept and a rerun resumes.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
