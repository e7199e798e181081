"""The recipe registry: one obvious call, ``build_manifest(name, root, **options)``."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from serdistill.base.errors import CorpusError
from serdistill.data.manifest import Manifest

_CATEGORICAL = frozenset({"seed", "proportions", "norms"})


@dataclass(frozen=True)
class Recipe:
    """A corpus recipe.

    Args:
        name: the name users type (``serdistill corpus NAME``).
        summary: one line for ``--help``.
        layout: what ROOT must hold.
        module: the module whose ``build(root, **options)`` makes the manifest.
        options: the keyword options ``build`` accepts.
        embedded: whether a copy ships with serdistill (``build(None)`` uses it).
    """

    name: str
    summary: str
    layout: str
    module: str
    options: frozenset[str]
    embedded: bool = False

    def build(self, root: str | os.PathLike[str] | None, **options: Any) -> Manifest:
        """Run the recipe (imports its module on first use); ``root=None``: the embedded copy."""
        if root is None and not self.embedded:
            raise CorpusError(
                f"The {self.name} recipe needs ROOT, the corpus folder ({self.layout}); only emodb ships with serdistill."
            )
        return importlib.import_module(self.module).build(root, **options)


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "msp-podcast",
            "MSP-Podcast: rated arousal/valence/dominance, its own splits, unannotated pool",
            "Audios/*.wav, Labels/labels_consensus.csv (or labels_concensus.csv / .json)",
            "serdistill.data.corpora.msp_podcast",
            frozenset({"min_duration", "max_duration"}),
        ),
        Recipe(
            "emodb",
            "EmoDB (German, 10 speakers, 7 emotions): targets derived from word norms",
            "audio/SSTTTEV.flac (e.g. 03a01Fa.flac), optional ratings.tsv",
            "serdistill.data.corpora.emodb",
            _CATEGORICAL,
            embedded=True,
        ),
        Recipe(
            "ravdess",
            "RAVDESS speech (24 actors, 8 emotions x 2 intensities): derived targets",
            "03-01-EE-II-SS-RR-AA.wav anywhere below ROOT (other modalities skipped)",
            "serdistill.data.corpora.ravdess",
            _CATEGORICAL,
        ),
        Recipe(
            "cremad",
            "CREMA-D (91 actors, 6 emotions): derived targets, voice-only ratings",
            "AudioWAV/1001_DFA_ANG_XX.wav, optional processedResults/, VideoDemographics.csv",
            "serdistill.data.corpora.cremad",
            _CATEGORICAL,
        ),
        Recipe(
            "synthetic",
            "espeak-ng speech whose prosody follows sampled targets (demo, not emotion)",
            "an output folder; the audio is generated there (needs espeak-ng)",
            "serdistill.data.corpora.synthetic",
            frozenset({"seed", "proportions", "n_files", "num_workers", "progress"}),
        ),
    )
}


def build_manifest(name: str, root: str | os.PathLike[str] | None = None, **options: Any) -> Manifest:
    """Build the validated manifest of corpus ``name`` found in (or, for synthetic, made in) ``root``.

    Args:
        name: a key of :data:`RECIPES`.
        root: the corpus folder; None for the copy shipped with serdistill (EmoDB only).
        **options: recipe options: ``seed``, ``proportions`` (train, development, test
            shares of the speakers), ``norms`` (a CSV path or :class:`Norms`) for the
            categorical corpora; ``min_duration``, ``max_duration`` for MSP-Podcast;
            ``n_files``, ``num_workers``, ``progress`` for synthetic.

    Raises:
        CorpusError: an unknown recipe or option, or a corpus that does not fit its layout.

    Examples:
        >>> sorted(RECIPES)
        ['cremad', 'emodb', 'msp-podcast', 'ravdess', 'synthetic']
    """
    recipe = RECIPES.get(name)
    if recipe is None:
        raise CorpusError(f"Unknown corpus recipe {name!r}; expected one of {', '.join(RECIPES)}.")
    unknown = sorted(set(options) - recipe.options)
    if unknown:
        accepted = ", ".join(_flag(o) for o in sorted(recipe.options)) or "none"
        raise CorpusError(
            f"The {name} recipe does not take {', '.join(map(_flag, unknown))}; it accepts {accepted}. Leave the others out."
        )
    if options.get("norms") is not None and not hasattr(options["norms"], "targets"):
        from serdistill.data.corpora.norms import load_norms

        options["norms"] = load_norms(options["norms"])
    return recipe.build(root, **options)


def _flag(option: str) -> str:
    """An option as both spellings: ``n_files (--n-files)``."""
    flag = "--split-proportions" if option == "proportions" else "--" + option.replace("_", "-")
    return f"{option} ({flag})"
