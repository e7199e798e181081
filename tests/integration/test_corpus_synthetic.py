"""The synthetic corpus: espeak-ng speech whose prosody follows the labels it asked for."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.stats import spearmanr

from serdistill.data.corpora import build_manifest, summarize
from serdistill.data.corpora import synthetic
from serdistill.base.errors import CorpusError
from serdistill.data.manifest import ATTRIBUTES

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, build_manifest("synthetic", root, n_files=12, seed=0, progress=False)


def test_small_corpus_has_the_layout_and_splits(corpus) -> None:
    root, manifest = corpus
    table = manifest.table
    assert len(table) == 12 and table["speaker"].nunique() == 12
    assert table.groupby("speaker")["split"].nunique().eq(1).all()  # the unlabelled voices too
    assert table["split"].value_counts().to_dict() == {"train": 6, "development": 2, "test": 2, "unlabeled": 2}
    unlabeled = table[table["split"] == "unlabeled"]
    assert sorted(unlabeled["gender"]) == ["female", "male"]
    assert unlabeled[list(ATTRIBUTES)].isna().all(axis=None)
    labelled = table[table["split"] != "unlabeled"][list(ATTRIBUTES)].to_numpy()
    assert ((labelled >= 1) & (labelled <= 7)).all()
    for file in table["file"]:
        info = soundfile.info(file)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.8 < info.duration < 6
    assert (root / "synthetic_plan.csv").is_file()
    assert "12 files, 12 speakers, 10 labelled, 2 unlabelled" in summarize(manifest)


def test_prosody_follows_the_targets_it_was_asked_for(corpus) -> None:
    root, _ = corpus
    plan = synthetic.plan(12, seed=0)
    rate, loudness = [], []
    for utterance in plan:
        signal, rate_hz = soundfile.read(str(root / "audio" / utterance.name))
        speech = np.flatnonzero(np.abs(signal) > 0.01)
        seconds = (speech[-1] - speech[0]) / rate_hz
        rate.append(len(utterance.text) / seconds)  # characters per second of speech
        loudness.append(np.sqrt(np.mean(signal[speech[0]:speech[-1]] ** 2)))
    arousal = [u.arousal for u in plan]
    dominance = [u.dominance for u in plan]
    assert spearmanr(arousal, rate).statistic > 0.7
    assert spearmanr(dominance, loudness).statistic > 0.7
    assert abs(spearmanr(arousal, loudness).statistic) < 0.7  # each cue follows its own attribute


def test_rerun_resumes_and_seed_reproduces(corpus, monkeypatch) -> None:
    root, manifest = corpus

    def fail(*args, **kwargs):
        raise AssertionError("a finished file was generated again")

    monkeypatch.setattr(synthetic, "_speak", fail)
    again = build_manifest("synthetic", root, n_files=12, seed=0, progress=False)
    assert again.table.equals(manifest.table)
    monkeypatch.undo()
    more = build_manifest("synthetic", root, n_files=14, seed=0, progress=False, num_workers=1)
    assert more.files[:12] == manifest.files  # file i depends on the seed and i only


def test_missing_espeak_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(CorpusError, match="espeak-ng was not found.*'no-such-espeak'.*apt-get install espeak-ng"):
        synthetic.build(tmp_path, n_files=12, espeak="no-such-espeak")
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="espeak-ng was not found.*make deps"):
        build_manifest("synthetic", tmp_path, n_files=12)
    assert not (tmp_path / "audio").exists()
    with pytest.raises(CorpusError, match="--n-files must be at least 12 \\(one per speaker\\); got 3"):
        synthetic.build(tmp_path, n_files=3)
