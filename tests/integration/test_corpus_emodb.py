"""The EmoDB recipe on the real corpus shipped with serdistill."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serdistill.runtime.cli import main
from serdistill.data.corpora import build_manifest, load_norms
from serdistill.data.manifest import ATTRIBUTES, read_manifest

CODES = {"W": 127, "L": 81, "N": 79, "F": 71, "A": 69, "T": 62, "E": 46}
CATEGORIES = {"anger": 127, "boredom": 81, "neutral": 79, "happiness": 71, "fear": 69, "sadness": 62,
              "disgust": 46}


@pytest.fixture(scope="module")
def emodb(emodb_root: Path):
    return build_manifest("emodb", emodb_root)


def test_emodb_has_535_files_10_speakers_and_the_published_category_counts(emodb) -> None:
    table = emodb.table
    assert len(table) == 535
    assert table["speaker"].nunique() == 10
    assert table["code"].value_counts().to_dict() == CODES
    assert table["category"].value_counts().to_dict() == CATEGORIES
    speakers = table.drop_duplicates("speaker").set_index("speaker")["gender"]
    assert speakers.value_counts().to_dict() == {"male": 5, "female": 5}
    assert speakers["08"] == "female" and speakers["03"] == "male"
    assert table["sentence"].nunique() == 10


def test_emodb_split_is_speaker_independent_and_gender_balanced(emodb) -> None:
    table = emodb.table
    assert table.groupby("speaker")["split"].nunique().eq(1).all()
    per_split = table.drop_duplicates("speaker").groupby("split")["gender"].apply(sorted).to_dict()
    assert per_split == {"development": ["female", "male"], "test": ["female", "male"],
                         "train": ["female"] * 3 + ["male"] * 3}


def test_emodb_targets_follow_the_recognition_share(emodb) -> None:
    table = emodb.table
    assert table["intensity"].between(0.8, 1.0).all()  # the corpus kept utterances recognised by >= 80 %
    labels = table[list(ATTRIBUTES)].to_numpy()
    assert np.isfinite(labels).all() and (labels >= 1).all() and (labels <= 7).all()
    norms = load_norms()
    expected = norms.targets(table["category"].tolist(), table["intensity"].to_numpy())
    np.testing.assert_allclose(labels, expected.to_numpy(), atol=1e-4)
    means = table.groupby("category")[["arousal", "valence"]].mean()
    assert means.loc["anger", "arousal"] > means.loc["neutral", "arousal"] > means.loc["boredom", "arousal"]
    assert means.loc["happiness", "valence"] > means.loc["neutral", "valence"] > means.loc["sadness", "valence"]


def test_emodb_split_depends_only_on_the_seed(emodb_root: Path, emodb) -> None:
    again = build_manifest("emodb", emodb_root, seed=0)
    assert again.table["split"].tolist() == emodb.table["split"].tolist()
    other = build_manifest("emodb", emodb_root, seed=1)
    assert other.table.groupby("speaker")["split"].nunique().eq(1).all()
    assert other.table["split"].tolist() != emodb.table["split"].tolist()


def test_emodb_through_the_cli(emodb_root: Path, emodb, tmp_path: Path, capsys) -> None:
    out = tmp_path / "emodb.csv"
    assert main(["corpus", "emodb", str(emodb_root), "-o", str(out)]) == 0
    assert "535 files, 10 speakers, 535 labelled, 0 unlabelled" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.files == emodb.files
    np.testing.assert_allclose(manifest.labels(), emodb.labels(), atol=1e-4)
