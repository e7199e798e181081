"""Corpus recipes: each turns a corpus folder into a validated :class:`~serdistill.data.manifest.Manifest`.

>>> from serdistill.data.corpora import build_manifest
>>> manifest = build_manifest("emodb", seed=0)  # doctest: +SKIP
>>> manifest.write("emodb.csv")  # doctest: +SKIP
"""

from __future__ import annotations

from serdistill.data.corpora.common import summarize
from serdistill.data.corpora.norms import Norms, load_norms
from serdistill.data.corpora.registry import RECIPES, Recipe, build_manifest
from serdistill.data.corpora.splits import assign_speakers, split_counts

__all__ = [
    "RECIPES",
    "Norms",
    "Recipe",
    "assign_speakers",
    "build_manifest",
    "load_norms",
    "split_counts",
    "summarize",
]
