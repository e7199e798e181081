"""Run serdistill's benchmarks, print their tables and PASS/FAIL per target.

Usage: ``python -m benchmarks [NAME ...] [--strict] [--json FILE]``.

Prints each benchmark's table and a PASS/FAIL line per target. The exit code is 0 even
when a target fails, unless ``--strict``; a benchmark that crashes always gives 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks import Skip, available, format_table, load, summary


def main(argv: list[str] | None = None) -> int:
    modules = {name: load(name) for name in available()}
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all: {', '.join(modules)})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target fails")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all rows as JSON")
    for module in modules.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.list:
        for name, module in modules.items():
            print(f"{name:16s} {summary(module)}")
        return 0
    unknown = [n for n in args.names if n.removeprefix("bench_") not in modules]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; expected some of {', '.join(modules)}")
    names = [n.removeprefix("bench_") for n in args.names] or list(modules)

    results: dict[str, object] = {}
    failed = crashed = False
    for name in names:
        print(f"== {name}: {summary(modules[name])}", flush=True)
        start = time.perf_counter()
        try:
            rows = modules[name].run(args)
        except Skip as skip:
            print(f"SKIP {name}: {skip}\n", flush=True)
            results[name] = {"skipped": str(skip)}
            continue
        except Exception:  # report and go on with the other benchmarks
            traceback.print_exc()
            print(f"CRASH {name}\n", flush=True)
            results[name] = {"crashed": traceback.format_exc()}
            crashed = True
            continue
        print(format_table(rows))
        for row in rows:
            if row.get("passed") is not None:
                verdict = "PASS" if row["passed"] else "FAIL"
                failed |= not row["passed"]
                print(f"{verdict} {name}: {row.get('target', '')}")
        print(f"({time.perf_counter() - start:.0f} s)\n", flush=True)
        results[name] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if crashed:
        return 1
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
