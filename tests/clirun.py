"""Run the ``serdistill`` command in-process and capture what it prints (for tests)."""
from __future__ import annotations

import contextlib
import io

from serdistill.runtime.cli import main


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``serdistill ARGV...``: the exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
