"""A tiny document model for reports, rendered as Markdown and as self-contained HTML.

A report is a list of :class:`Block` (headings, paragraphs, lists, tables, images, code,
collapsible details); :func:`to_markdown` and :func:`to_html` render the same list, so the
two files always say the same thing. HTML embeds images as data URIs.

Examples:
    >>> blocks = [Block("h2", "Results"), Block("table", Table(["x", "y"], [["1", "a|b"]]))]
    >>> print(to_markdown(blocks))
    ## Results
    <BLANKLINE>
    | x | y    |
    |--:|:-----|
    | 1 | a\\|b |
    <BLANKLINE>
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_NUMBER = re.compile(r"^[−+-]?(\d|inf|—)")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; }
th { background: #f3f4f6; font-weight: 600; }
tbody tr:nth-child(even) { background: #f8f9fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
p.legend { font-size: 0.85em; color: #57606a; max-width: 60em; }
img { max-width: 100%; border: 1px solid #eaeef2; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; }
details { margin: 1em 0; }
"""


@dataclass
class Table:
    """A table: ``header`` (Markdown's), rows of strings, an optional second HTML header.

    Attributes:
        header: column names; Markdown shows these.
        rows: cells as strings.
        html_header: HTML's column names under ``groups`` (default ``header``).
        groups: HTML's top header row, (name, columns spanned) covering every column.
    """

    header: list[str]
    rows: list[list[str]]
    html_header: list[str] | None = None
    groups: list[tuple[str, int]] | None = None


@dataclass
class Block:
    """One piece of a report: kind in h1 h2 h3 p legend list table image code details.

    ``content``: the text, list of items, :class:`Table`, image path (relative to the
    report), or the inner blocks of ``details``; ``extra``: an image's caption or the
    summary line of ``details``.
    """

    kind: str
    content: Any
    extra: str = ""
    children: list[Block] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Numbers


def fmt_ccc(value: float) -> str:
    """A CCC with 4 decimals, or an em dash for NaN."""
    return "—" if value is None or math.isnan(value) else f"{value:.4f}"


def fmt_pm(mean: float, std: float) -> str:
    """``mean ± std`` with 4 decimals (just the mean when std is NaN)."""
    return fmt_ccc(mean) if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def fmt_pct(value: float) -> str:
    """A relative change as a signed percentage: 0.0426 -> '+4.26%'."""
    return "—" if value is None or math.isnan(value) else f"{100 * value:+.2f}%"


def fmt_p(p: float) -> str:
    """A p-value: 4 decimals, scientific below 1e-4."""
    if p is None or math.isnan(p):
        return "—"
    return "0" if p == 0 else (f"{p:.1e}" if p < 1e-4 else f"{p:.4f}")


def fmt_t(t: float) -> str:
    """A t statistic with 2 decimals."""
    if t is None or math.isnan(t):
        return "—"
    return ("inf" if t > 0 else "-inf") if math.isinf(t) else f"{t:.2f}"


# ---------------------------------------------------------------------------------------
# Markdown


def _md_text(text: str) -> str:
    return str(text).replace("*", r"\*")


def _md_table(table: Table) -> str:
    cells = [[_md_text(c).replace("|", r"\|") for c in row] for row in [table.header, *table.rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.header))]
    numeric = [all(_NUMBER.match(r[i] or "—") for r in table.rows) and bool(table.rows) for i in range(len(widths))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else (":" + "-" * (w + 1)) for w, n in zip(widths, numeric)) + "|"
    return "\n".join([lines[0], rule, *lines[1:]])


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown (GitHub flavour); images link to their relative paths."""
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


def _md_block(block: Block) -> str:
    kind, content = block.kind, block.content
    if kind in ("h1", "h2", "h3"):
        return "#" * int(kind[1]) + " " + _md_text(content)
    if kind in ("p", "legend"):
        return _md_text(content)
    if kind == "list":
        return "\n".join(f"- {_md_text(item)}" for item in content)
    if kind == "table":
        return _md_table(content)
    if kind == "image":
        return f"![{block.extra}]({Path(content).as_posix()})"
    if kind == "code":
        return f"```\n{content}\n```"
    if kind == "details":
        inner = "\n\n".join(_md_block(b) for b in block.children)
        return f"<details><summary>{html.escape(block.extra)}</summary>\n\n{inner}\n\n</details>"
    raise ValueError(f"Unknown block kind {kind!r}.")


# ---------------------------------------------------------------------------------------
# HTML


def to_html(blocks: Sequence[Block], *, base: str | os.PathLike[str], title: str) -> str:
    """The blocks as one self-contained HTML page; images under ``base`` are embedded."""
    body = "\n".join(_html_block(b, Path(base)) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _html_table(table: Table) -> str:
    out = ["<table>", "<thead>"]
    if table.groups and sum(n for _, n in table.groups) != len(table.header):
        raise ValueError(f"Table groups span {sum(n for _, n in table.groups)} columns; the header has {len(table.header)}.")
    if table.groups:
        out.append("<tr>" + "".join(f'<th colspan="{n}">{html.escape(name)}</th>' for name, n in table.groups) + "</tr>")
    header = table.html_header or table.header
    out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    out.append("</thead>\n<tbody>")
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>' if _NUMBER.match(c) else f"<td>{html.escape(c, quote=False)}</td>"
            for c in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody>\n</table>")
    return "\n".join(out)


def _html_block(block: Block, base: Path) -> str:
    kind, content = block.kind, block.content
    if kind in ("h1", "h2", "h3"):
        return f"<{kind}>{html.escape(content)}</{kind}>"
    if kind == "p":
        return f"<p>{html.escape(content, quote=False)}</p>"
    if kind == "legend":
        return f'<p class="legend">{html.escape(content, quote=False)}</p>'
    if kind == "list":
        return "<ul>\n" + "\n".join(f"<li>{html.escape(i, quote=False)}</li>" for i in content) + "\n</ul>"
    if kind == "table":
        return _html_table(content)
    if kind == "image":
        data = base64.b64encode((base / content).read_bytes()).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.extra)}">'
            f"<figcaption>{html.escape(block.extra)}</figcaption></figure>"
        )
    if kind == "code":
        return f"<pre><code>{html.escape(content)}</code></pre>"
    if kind == "details":
        inner = "\n".join(_html_block(b, base) for b in block.children)
        return f"<details><summary>{html.escape(block.extra)}</summary>\n{inner}\n</details>"
    raise ValueError(f"Unknown block kind {kind!r}.")
