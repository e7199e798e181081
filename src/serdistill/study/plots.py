"""The report's figures, drawn with matplotlib's Agg renderer and written atomically as PNG.

Figures are built as :class:`matplotlib.figure.Figure` objects, without ``pyplot``, so no
global backend or figure state is touched and nothing needs a display. Each function takes
a tidy table and a path and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from serdistill.base.io import atomic_path
from serdistill.study.settings import get_setting

DPI = 110
_TABLE_COLOURS = {1: "#4C72B0", 2: "#DD8452", 0: "#8C8C8C"}
_WHO_COLOURS = {"teachers": "#C44E52", "students": "#4C72B0"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _title(attribute: str) -> str:
    return attribute.capitalize()


def plot_ccc_bars(summary: pd.DataFrame, path: str | os.PathLike[str], *, n_trials: int) -> Path:
    """Horizontal bars of the mean CCC per setting, error bars one std over trials.

    One panel per attribute; the paper's value is a black diamond. Each panel's CCC axis is
    zoomed to the values shown (it does not start at 0), which the axis label says.

    Args:
        summary: :func:`serdistill.study.stats.summarise` output (index setting, attribute).
        path: the PNG to write.
        n_trials: trials the means are over (for the axis label).
    """
    settings = list(dict.fromkeys(summary.index.get_level_values("setting")))
    attributes = list(dict.fromkeys(summary.index.get_level_values("attribute")))
    fig = _figure(4.2 * len(attributes) + 1.8, 0.42 * len(settings) + 1.6)
    axes = np.atleast_1d(fig.subplots(1, len(attributes), sharey=True))
    y = np.arange(len(settings))[::-1]
    labels = [_bar_label(s) for s in settings]
    for ax, attribute in zip(axes, attributes):
        means, stds, papers, colours = [], [], [], []
        for key in settings:
            row = summary.loc[(key, attribute)] if (key, attribute) in summary.index else None
            means.append(np.nan if row is None else row["mean"])
            stds.append(0.0 if row is None or np.isnan(row["std"]) else row["std"])
            papers.append(get_setting(key).paper_ccc(attribute))
            colours.append(_TABLE_COLOURS[get_setting(key).table])
        mean_a, std_a, paper_a = np.array(means), np.array(stds), np.array(papers)
        ax.barh(
            y,
            mean_a,
            xerr=std_a,
            color=colours,
            alpha=0.85,
            height=0.7,
            error_kw={"capsize": 3, "ecolor": "#333333", "elinewidth": 1.2},
        )
        ax.plot(
            paper_a,
            y - 0.22,
            "D",
            markerfacecolor="white",
            markeredgecolor="black",
            markersize=5,
            linestyle="none",
            label="paper (Sridhar & Busso 2020)",
            zorder=3,
        )
        ax.set_xlim(*_zoom(np.concatenate([mean_a - std_a, mean_a + std_a, paper_a])))
        ax.set_title(_title(attribute))
        ax.set_xlabel(f"CCC, mean ± std over {n_trials} trials\n(axis zoomed, not from 0)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels)
    from matplotlib.patches import Patch

    tables = sorted({get_setting(k).table for k in settings}, key=lambda t: (t == 0, t))
    names = {1: "Table 1", 2: "Table 2 (ablation)", 0: "other"}
    handles = [Patch(color=_TABLE_COLOURS[t], label=names[t]) for t in tables]
    handles += axes[0].get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    fig.suptitle("CCC per setting on the test set")
    return _save(fig, path)


def _bar_label(key: str) -> str:
    setting = get_setting(key)
    if setting.ablation is None:
        return setting.label
    unlabelled, mc, n = setting.ablation
    name = f"A {'yes' if unlabelled else 'no'}, B {'yes' if mc else 'no'}, C {n}"
    return f"{name} (full)" if all(setting.ablation[:2]) and n > 1 else name


def _zoom(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    margin = max(0.15 * (high - low), 0.01)
    return low - margin, high + margin


def plot_alpha_beta(means: Mapping[str, pd.DataFrame], path: str | os.PathLike[str]) -> Path:
    """Heat maps of the mean development CCC over the α × β grid, one per attribute.

    Args:
        means: attribute -> table of mean dev CCC, index α, columns β (any shape; NaN
            where a cell was not run). The best cell is outlined.
        path: the PNG to write.
    """
    attributes = list(means)
    fig = _figure(4.6 * len(attributes), 4.3)
    axes = np.atleast_1d(fig.subplots(1, len(attributes)))
    for ax, attribute in zip(axes, attributes):
        _heat_map(fig, ax, means[attribute])
        ax.set_title(_title(attribute))
    fig.suptitle("Development CCC over the α (1 − CCC) × β (embedding MSE) grid, mean over trials")
    return _save(fig, path)


def _heat_map(fig, ax, table: pd.DataFrame) -> None:
    values = table.to_numpy(dtype=np.float64)
    image = ax.imshow(np.ma.masked_invalid(values), origin="lower", cmap="viridis", aspect="auto")
    ax.set_xticks(range(values.shape[1]), [f"{b:g}" for b in table.columns])
    ax.set_yticks(range(values.shape[0]), [f"{a:g}" for a in table.index])
    ax.set_xlabel("β (weight of the embedding MSE)")
    ax.set_ylabel("α (weight of 1 − CCC)")
    fig.colorbar(image, ax=ax, shrink=0.85, label="mean dev CCC")
    if np.isfinite(values).any():
        i, j = np.unravel_index(np.nanargmax(values), values.shape)
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.2))
    if values.size <= 100:
        _annotate(ax, values, image)


def _annotate(ax, values: np.ndarray, image) -> None:
    size = 8 if max(values.shape) <= 5 else 6
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            dark = image.norm(value) < 0.6
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=size, color="white" if dark else "black")


def plot_consistency(consistency: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Figure 2: per attribute, histograms of the std across teachers and across students.

    Both histograms of a panel share their bins; the legend gives each median, also drawn
    as a dashed line.

    Args:
        consistency: long table with columns ``attribute``, ``who`` (teachers|students), ``std``.
        path: the PNG to write.
    """
    attributes = list(dict.fromkeys(consistency["attribute"]))
    fig = _figure(4.3 * len(attributes), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(attributes)))
    for ax, attribute in zip(axes, attributes):
        rows = consistency[consistency["attribute"] == attribute]
        finite = rows["std"].to_numpy(dtype=np.float64)
        bins = np.histogram_bin_edges(finite[np.isfinite(finite)], bins=30)
        for who in ("teachers", "students"):
            values = rows.loc[rows["who"] == who, "std"].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            median = float(np.median(values))
            ax.hist(
                values, bins=bins, alpha=0.55, color=_WHO_COLOURS[who], label=f"{who.capitalize()} (median {median:.3f})"
            )
            ax.axvline(median, color=_WHO_COLOURS[who], linestyle="--", linewidth=1.2)
        ax.set_title(_title(attribute))
        ax.set_xlabel("std of the N members' predictions")
        ax.set_ylabel("test segments")
        ax.legend(fontsize=8)
    fig.suptitle("Consistency of predictions: std across teachers vs across students")
    return _save(fig, path)


def timeline_plot(
    rows: pd.DataFrame, path: str | os.PathLike[str], *, title: str = "", label_range: tuple[float, float] = (1.0, 7.0)
) -> Path:
    """One file's segment predictions over time: a panel per attribute, the students' mean at
    each segment's middle, a band of +-1 std (their disagreement), the label scale as limits.

    Args:
        rows: the segment rows of one file (``start``, ``end``, ``<attribute>`` and
            ``<attribute>_std`` columns), as :meth:`serdistill.deploy.bundle.Bundle.predict_segments` gives.
    """
    attributes = [c for c in ("arousal", "valence", "dominance") if c in rows.columns]
    fig = _figure(9.0, 1.6 + 1.5 * len(attributes))
    axes = fig.subplots(len(attributes), 1, sharex=True, squeeze=False)[:, 0]
    middle = ((rows["start"] + rows["end"]) / 2).to_numpy()
    for ax, attribute in zip(axes, attributes):
        mean, std = rows[attribute].to_numpy(), rows[f"{attribute}_std"].to_numpy()
        for start, end, m, sd in zip(rows["start"], rows["end"], mean, std):  # each segment's own span
            ax.fill_between([start, end], m - sd, m + sd, color="#4C72B0", alpha=0.25, linewidth=0)
        ax.plot(middle, mean, color="#4C72B0", marker="o", markersize=2.5, linewidth=1.2)
        ax.set_ylim(*label_range)
        ax.set_ylabel(_title(attribute))
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    if title:
        axes[0].set_title(title)
    return _save(fig, path)
