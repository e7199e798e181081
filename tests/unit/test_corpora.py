"""Corpus recipes on tiny fake corpora: layouts, labels, splits, norms and every error message."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from serdistill.runtime.cli import main
from serdistill.data.corpora import RECIPES, assign_speakers, build_manifest, load_norms, split_counts, summarize
from serdistill.data.corpora.norms import Norms
from serdistill.base.errors import CorpusError
from serdistill.data.manifest import ATTRIBUTES, read_manifest

SR = 16000


def _wav(path: Path, seconds: float = 0.25, *, subtype: str = "PCM_16") -> Path:
    """A short tone, so that every fake corpus holds real, readable audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    soundfile.write(str(path), 0.1 * np.sin(2 * np.pi * 220 * t), SR, subtype=subtype)
    return path


def _targets(norms: Norms, category: str, s: float) -> np.ndarray:
    """The formula written out: neutral + s * (norm - neutral)."""
    neutral = norms.table.loc["neutral", list(ATTRIBUTES)].to_numpy(float)
    return neutral + s * (norms.table.loc[category, list(ATTRIBUTES)].to_numpy(float) - neutral)


# ---------------------------------------------------------------- norms

# NRC-VAD v1.0 rows (valence, arousal, dominance on 0..1), as recorded in data/vad_norms.md
NRC = {
    "anger": (0.167, 0.865, 0.657), "boredom": (0.167, 0.139, 0.255), "calm": (0.875, 0.100, 0.282),
    "disgust": (0.052, 0.775, 0.317), "fear": (0.073, 0.840, 0.293), "happiness": (0.960, 0.732, 0.850),
    "neutral": (0.469, 0.184, 0.357), "sadness": (0.052, 0.288, 0.164), "surprise": (0.875, 0.875, 0.562),
}


def test_packaged_norms_are_the_nrc_values_mapped_linearly_to_1_7() -> None:
    norms = load_norms()
    assert sorted(norms.emotions) == sorted(NRC)
    for emotion, (v, a, d) in NRC.items():
        row = norms.table.loc[emotion]
        np.testing.assert_allclose([row.valence, row.arousal, row.dominance], [1 + 6 * v, 1 + 6 * a, 1 + 6 * d],
                                   atol=1e-9, err_msg=emotion)


def test_targets_scale_around_neutral_and_clip_strength() -> None:
    norms = load_norms()
    got = norms.targets(["anger", "anger", "anger", "sadness", "neutral"], [0.0, 0.5, 1.0, 1.7, 0.3])
    assert list(got.columns) == list(ATTRIBUTES)
    np.testing.assert_allclose(got.iloc[0], _targets(norms, "neutral", 1.0))
    np.testing.assert_allclose(got.iloc[1], _targets(norms, "anger", 0.5))
    np.testing.assert_allclose(got.iloc[2], [1 + 6 * 0.865, 1 + 6 * 0.167, 1 + 6 * 0.657])
    np.testing.assert_allclose(got.iloc[3], _targets(norms, "sadness", 1.0))  # clipped to 1
    np.testing.assert_allclose(got.iloc[4], _targets(norms, "neutral", 1.0))


def _norms_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "norms.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("emotion,valence,arousal\nneutral,4,4\n", "lacks the column(s) dominance"),
        ("emotion,valence,arousal,dominance\nneutral,4,4,4\nanger,2,high,5\n",
         "arousal is not a number for anger"),
        ("emotion,valence,arousal,dominance\nneutral,4,4,4\nanger,0.167,0.865,0.657\n", "outside 1..7 for anger"),
        ("emotion,valence,arousal,dominance\nneutral,4,4,4\nanger,2,6,5\nanger,2,6,5\n",
         "listed more than once: anger"),
        ("emotion,valence,arousal,dominance\nanger,2,6,5\n", "no 'neutral' row"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_norms_tables_are_rejected_with_the_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = _norms_file(tmp_path, text)
    with pytest.raises(CorpusError, match="Norms table") as err:
        load_norms(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_missing_norms_file_says_how_to_fall_back(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist.*leave out --norms"):
        load_norms(tmp_path / "absent.csv")


def test_a_norms_table_without_a_needed_emotion_names_it(tmp_path: Path) -> None:
    _ravdess(tmp_path / "ravdess")
    path = _norms_file(tmp_path, "emotion,valence,arousal,dominance\nneutral,4,4,4\nanger,2,6,5\n")
    with pytest.raises(CorpusError, match=r"no row for calm, happiness, sadness, fear, disgust, surprise; "
                                          r"the ravdess recipe needs"):
        build_manifest("ravdess", tmp_path / "ravdess", norms=path)


def test_own_norms_table_changes_the_targets(tmp_path: Path) -> None:
    _ravdess(tmp_path / "ravdess")
    rows = "\n".join(f"{e},4,4,4" for e in NRC if e != "anger")
    path = _norms_file(tmp_path, f"emotion,valence,arousal,dominance\n{rows}\nanger,1,7,7\n")
    table = build_manifest("ravdess", tmp_path / "ravdess", norms=path).table
    angry = table[(table["category"] == "anger") & (table["level"] == "strong")]
    np.testing.assert_allclose(angry[["arousal", "valence", "dominance"]].to_numpy(), [[7, 1, 7]] * len(angry))
    assert set(table.loc[table["category"] != "anger", "arousal"]) == {4.0}


# ---------------------------------------------------------------- splits

SPEAKERS = [f"s{i:02d}" for i in range(10)]
GENDERS = {s: ("female" if i % 2 else "male") for i, s in enumerate(SPEAKERS)}


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_split_is_speaker_independent_deterministic_and_order_free(seed: int) -> None:
    split = assign_speakers(SPEAKERS, genders=GENDERS, seed=seed)
    assert set(split) == set(SPEAKERS)  # every speaker exactly once: a dict cannot cross splits
    assert sorted(split.values()).count("train") == 6
    assert split == assign_speakers(list(reversed(SPEAKERS)) * 3, genders=GENDERS, seed=seed)
    for name in ("development", "test"):  # 5 + 5 speakers: each small split gets one of each
        assert sorted(GENDERS[s] for s, v in split.items() if v == name) == ["female", "male"]


def test_different_seeds_give_different_splits() -> None:
    splits = {tuple(sorted(assign_speakers(SPEAKERS, seed=seed).items())) for seed in range(10)}
    assert len(splits) > 5


@pytest.mark.parametrize(("n", "expected"), [(3, (1, 1, 1)), (4, (2, 1, 1)), (10, (6, 2, 2)), (24, (14, 5, 5))])
def test_split_counts_keep_one_speaker_per_split(n: int, expected: tuple[int, int, int]) -> None:
    assert tuple(split_counts(n).values()) == expected


def test_split_needs_three_speakers_and_sane_proportions() -> None:
    with pytest.raises(CorpusError, match="at least 3 speakers.*got 2"):
        assign_speakers(["a", "b"])
    with pytest.raises(CorpusError, match="summing to 1; got \\[0.5, 0.5, 0.5\\]"):
        assign_speakers(SPEAKERS, proportions=(0.5, 0.5, 0.5))
    with pytest.raises(CorpusError, match="three positive numbers"):
        assign_speakers(SPEAKERS, proportions=(1.0, 0.0))


# ---------------------------------------------------------------- RAVDESS


def _ravdess(root: Path, actors: range = range(1, 7)) -> Path:
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        for emotion in range(1, 9):
            for intensity in (1, 2) if emotion > 1 else (1,):
                _wav(folder / f"03-01-{emotion:02d}-{intensity:02d}-01-01-{actor:02d}.wav", 0.1)
        _wav(folder / f"01-01-05-01-01-01-{actor:02d}.wav", 0.1)  # audio-visual: skipped
        _wav(folder / f"03-02-05-01-01-01-{actor:02d}.wav", 0.1)  # song: skipped
    return root


def test_ravdess_reads_codes_skips_other_modalities_and_says_so(tmp_path: Path, caplog) -> None:
    root = _ravdess(tmp_path / "RAVDESS")
    with caplog.at_level(logging.INFO, logger="serdistill.data.corpora"):
        manifest = build_manifest("ravdess", root, seed=3)
    table = manifest.table
    assert len(table) == 6 * 15
    assert "skipped 12 file(s) that are not audio-only speech" in caplog.text
    row = table[table["file"].str.endswith("03-01-05-02-01-01-03.wav")].iloc[0]
    assert (row.speaker, row.gender, row.category) == ("03", "male", "anger")
    assert (row.level, row.strength) == ("strong", 1.0)
    assert table.loc[table["speaker"] == "04", "gender"].unique().tolist() == ["female"]
    norms = load_norms()
    calm = table[(table["category"] == "calm") & (table["level"] == "normal")].iloc[0]
    np.testing.assert_allclose(calm[list(ATTRIBUTES)].to_numpy(float), _targets(norms, "calm", 0.75), atol=1e-4)
    assert table.groupby("speaker")["split"].nunique().max() == 1
    assert sorted(table["split"].unique()) == ["development", "test", "train"]
    assert table["duration"].round(2).eq(0.1).all()


def test_ravdess_flac_files_are_found_too(tmp_path: Path) -> None:
    for actor in (1, 2, 3):
        _wav(tmp_path / f"03-01-03-02-02-02-{actor:02d}.flac", 0.1)
    assert len(build_manifest("ravdess", tmp_path)) == 3


def test_ravdess_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="holds no .wav or .flac files"):
        build_manifest("ravdess", tmp_path)
    _wav(tmp_path / "angry_actor1.wav")
    _wav(tmp_path / "03-01-09-01-01-01-01.wav")  # emotion 09 does not exist
    with pytest.raises(CorpusError, match=r"2 of 2 audio file\(s\).*not named like RAVDESS.*03-01-09-01-01-01-01"):
        build_manifest("ravdess", tmp_path)
    (tmp_path / "angry_actor1.wav").unlink()
    (tmp_path / "03-01-09-01-01-01-01.wav").unlink()
    _wav(tmp_path / "01-01-05-01-01-01-01.wav")
    with pytest.raises(CorpusError, match="no audio-only speech files.*1 file"):
        build_manifest("ravdess", tmp_path)


# ---------------------------------------------------------------- CREMA-D

CREMA_FILES = [
    f"{actor}_{sentence}_{emotion}_{level}"
    for actor in ("1001", "1002", "1003", "1004", "1005", "1006")
    for sentence, emotion, level in [("IEO", "ANG", "HI"), ("IEO", "SAD", "LO"), ("DFA", "NEU", "XX"),
                                     ("TIE", "HAP", "XX"), ("IEO", "FEA", "MD"), ("ITS", "DIS", "XX")]
]


def _cremad(root: Path, *, votes: bool = False, summary: bool = False, demographics: bool = True) -> Path:
    for name in CREMA_FILES:
        _wav(root / "AudioWAV" / f"{name}.wav", 0.1)
    results = root / "processedResults"
    results.mkdir(parents=True, exist_ok=True)
    if votes:  # voice rows say 3 of 4 recognised the intended emotion; face rows say 0 of 4
        rows = []
        for i, name in enumerate(CREMA_FILES, start=1):
            letter = {"ANG": "A", "DIS": "D", "FEA": "F", "HAP": "H", "NEU": "N", "SAD": "S"}[name.split("_")[2]]
            counts = dict.fromkeys("ADFHNS", 0)
            voice = dict(counts, **{letter: 3, ("N" if letter != "N" else "S"): 1})
            face = dict(counts, **{("N" if letter != "N" else "S"): 4})
            rows.append({"": 100000 + i, **voice, "fileName": name, "numResponses": 4, "agreement": 0.75})
            rows.append({"": 200000 + i, **face, "fileName": name, "numResponses": 4, "agreement": 1.0})
        pd.DataFrame(rows).to_csv(results / "tabulatedVotes.csv", index=False)
    if summary:  # the intended emotion tied with neutral at level 60, except SAD_LO: neutral alone
        rows = []
        for i, name in enumerate(CREMA_FILES, start=1):
            letter = {"ANG": "A", "DIS": "D", "FEA": "F", "HAP": "H", "NEU": "N", "SAD": "S"}[name.split("_")[2]]
            if name.endswith("SAD_LO"):
                vote, level = "N", "70"
            elif letter == "N":
                vote, level = "N", "60"
            else:
                vote, level = f"{letter}:N", "60:50"
            rows.append({"": i, "FileName": name, "VoiceVote": vote, "VoiceLevel": level,
                         "FaceVote": "N", "FaceLevel": "50", "MultiModalVote": "N", "MultiModalLevel": "50"})
        pd.DataFrame(rows).to_csv(results / "summaryTable.csv", index=False)
    if demographics:
        pd.DataFrame({"ActorID": [1001, 1002, 1003, 1004, 1005, 1006],
                      "Sex": ["Male", "Female", "Female", "Male", "Male", "Female"]}).to_csv(
            root / "VideoDemographics.csv", index=False)
    return root


def test_cremad_without_ratings_uses_level_codes_and_demographics(tmp_path: Path) -> None:
    table = build_manifest("cremad", _cremad(tmp_path)).table
    assert len(table) == 36
    by_level = table.groupby("level")["strength"].unique().map(list).to_dict()
    assert by_level == {"HI": [1.0], "LO": [0.5], "MD": [0.75], "XX": [0.75]}
    assert set(table["intensity_source"]) == {"level_code"}
    assert table.set_index("speaker")["gender"].to_dict()["1002"] == "female"
    assert table.loc[0, "sentence"] == "Don't forget a jacket"
    small = table[table["split"] != "train"].drop_duplicates("speaker")  # one actor each of 3 f + 3 m
    assert sorted(small["gender"]) == ["female", "male"]


def test_cremad_uses_voice_only_agreement_from_tabulated_votes(tmp_path: Path) -> None:
    table = build_manifest("cremad", _cremad(tmp_path, votes=True, summary=True)).table
    assert set(table["intensity_source"]) == {"voice_agreement"}
    np.testing.assert_allclose(table["intensity"], 0.75)  # 3 of 4 voice raters; face rows ignored
    angry = table[table["category"] == "anger"].iloc[0]
    np.testing.assert_allclose(angry[list(ATTRIBUTES)].to_numpy(float), _targets(load_norms(), "anger", 0.75),
                               atol=1e-4)


def test_cremad_summary_table_gives_voice_level_or_zero_when_not_recognised(tmp_path: Path) -> None:
    table = build_manifest("cremad", _cremad(tmp_path, summary=True)).table.set_index("utterance")
    assert set(table["intensity_source"]) == {"voice_level"}
    assert table.loc["1001_IEO_ANG_HI", "strength"] == pytest.approx(0.60)
    assert table.loc["1001_DFA_NEU_XX", "strength"] == pytest.approx(0.60)
    assert table.loc["1001_IEO_SAD_LO", "strength"] == 0.0  # voice majority heard neutral
    np.testing.assert_allclose(table.loc["1001_IEO_SAD_LO", list(ATTRIBUTES)].to_numpy(float),
                               _targets(load_norms(), "neutral", 1.0), atol=1e-4)


def test_cremad_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="holds no .wav or .flac files"):
        build_manifest("cremad", tmp_path)
    _wav(tmp_path / "AudioWAV" / "1001_DFA_ANGRY_XX.wav")
    with pytest.raises(CorpusError, match="not named like CREMA-D.*1001_DFA_ANGRY_XX.wav"):
        build_manifest("cremad", tmp_path)
    _cremad(tmp_path / "c")
    (tmp_path / "c" / "processedResults" / "tabulatedVotes.csv").write_text("fileName,A\nx,1\n")
    with pytest.raises(CorpusError, match="tabulatedVotes.csv lacks the column.*numResponses"):
        build_manifest("cremad", tmp_path / "c")


# ---------------------------------------------------------------- EmoDB layout errors


def test_emodb_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        build_manifest("emodb", tmp_path / "absent")
    with pytest.raises(CorpusError, match="has no audio/ folder"):
        build_manifest("emodb", tmp_path)
    (tmp_path / "audio").mkdir()
    with pytest.raises(CorpusError, match="holds no .flac or .wav files"):
        build_manifest("emodb", tmp_path)
    _wav(tmp_path / "audio" / "anger_03.wav")
    with pytest.raises(CorpusError, match=r"1 of 1 file name\(s\).*SSTTTEV.*anger_03.wav"):
        build_manifest("emodb", tmp_path)


def test_emodb_fake_corpus_with_and_without_ratings(tmp_path: Path, caplog) -> None:
    names = ["03a01Wa", "08a01Lb", "09b02Tc", "10a05Na", "11b10Fa", "12a02Ea"]
    for name in names:
        _wav(tmp_path / "audio" / f"{name}.flac", 0.1)
    _wav(tmp_path / "audio" / "readme.wav", 0.1)  # not EmoDB: skipped with a warning
    with caplog.at_level(logging.WARNING, logger="serdistill.data.corpora"):
        table = build_manifest("emodb", tmp_path).table
    assert "readme.wav" in caplog.text and "ratings" in caplog.text
    assert table["strength"].eq(1.0).all()
    (tmp_path / "ratings.tsv").write_text("utterance\trecognition_pct\tnaturalness_pct\n"
                                          + "".join(f"{n}\t80.00\t50.00\n" for n in names))
    table = build_manifest("emodb", tmp_path).table.set_index("utterance")
    assert table.loc["03a01Wa", ["category", "gender", "sentence"]].tolist() == ["anger", "male", "a01"]
    np.testing.assert_allclose(table.loc["03a01Wa", list(ATTRIBUTES)].to_numpy(float),
                               _targets(load_norms(), "anger", 0.8), atol=1e-4)
    (tmp_path / "ratings.tsv").write_text("utterance\tscore\n03a01Wa\t80\n")
    with pytest.raises(CorpusError, match="ratings.tsv lacks the column.*recognition_pct"):
        build_manifest("emodb", tmp_path)


# ---------------------------------------------------------------- MSP-Podcast

MSP_ROWS = [  # FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
    ("MSP-PODCAST_0001_0001.wav", "A", 5.2, 2.4, 4.8, "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0002.wav", "N", 3.8, 4.2, 3.6, "127", "Male", "Train"),
    ("MSP-PODCAST_0002_0001.wav", "H", 4.6, 5.8, 4.0, "Unknown", "Female", "Train"),
    ("MSP-PODCAST_0003_0001.wav", "S", 2.6, 2.2, 3.0, "310", "Female", "Development"),
    ("MSP-PODCAST_0004_0001.wav", "N", 4.0, 4.0, 4.0, "412", "Male", "Test1"),
    ("MSP-PODCAST_0005_0001.wav", "X", 3.4, 3.0, 3.2, "533", "Female", "Test2"),
    ("MSP-PODCAST_0006_0001.wav", "A", 6.0, 2.0, 5.6, "600", "Male", "Train"),  # 12 s: outside 2.75..11
    ("MSP-PODCAST_0099_0001.wav", "N", 4.0, 4.0, 4.0, "999", "Male", "Train"),  # no audio
]
MSP_COLUMNS = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
DURATIONS = {"MSP-PODCAST_0001_0001.wav": 3.0, "MSP-PODCAST_0001_0002.wav": 4.0, "MSP-PODCAST_0002_0001.wav": 3.5,
             "MSP-PODCAST_0003_0001.wav": 5.0, "MSP-PODCAST_0004_0001.wav": 3.0, "MSP-PODCAST_0005_0001.wav": 3.0,
             "MSP-PODCAST_0006_0001.wav": 12.0, "MSP-PODCAST_0010_0001.wav": 3.0, "MSP-PODCAST_0010_0002.wav": 2.0}


def _msp(root: Path, form: str = "csv") -> Path:
    for name, seconds in DURATIONS.items():  # the last two have no label row: the unlabelled pool
        _wav(root / "Audios" / name, seconds, subtype="PCM_U8")
    labels = root / "Labels"
    labels.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(MSP_ROWS, columns=MSP_COLUMNS)
    if form in ("csv", "concensus"):
        frame.to_csv(labels / ("labels_consensus.csv" if form == "csv" else "labels_concensus.csv"), index=False)
    elif form == "json-dict":
        data = {r["FileName"]: {k: v for k, v in r.items() if k != "FileName"} for r in frame.to_dict("records")}
        (labels / "labels_consensus.json").write_text(json.dumps(data))
    elif form == "json-list":
        (labels / "labels_consensus.json").write_text(json.dumps(frame.to_dict("records")))
    return root


@pytest.mark.parametrize("form", ["csv", "concensus", "json-dict", "json-list"])
def test_msp_podcast_every_label_form_gives_the_same_manifest(tmp_path: Path, form: str) -> None:
    table = build_manifest("msp-podcast", _msp(tmp_path / form, form)).table
    reference = build_manifest("msp-podcast", _msp(tmp_path / "reference")).table
    pd.testing.assert_frame_equal(table.drop(columns="file"), reference.drop(columns="file"))
    table = table.set_index(table["file"].map(lambda f: Path(f).name))
    assert len(table) == 9  # 7 labelled with audio + 2 unlabelled; the row without audio is left out
    assert table.loc["MSP-PODCAST_0001_0001.wav", ["split", "speaker", "gender", "category"]].tolist() == [
        "train", "127", "male", "A"]
    assert table.loc["MSP-PODCAST_0001_0001.wav", ["arousal", "valence", "dominance"]].tolist() == [5.2, 2.4, 4.8]
    assert table.loc["MSP-PODCAST_0002_0001.wav", "speaker"] == "Unknown"
    assert table.loc["MSP-PODCAST_0003_0001.wav", "split"] == "development"
    assert table.loc["MSP-PODCAST_0004_0001.wav", "split"] == "test"
    assert table.loc["MSP-PODCAST_0005_0001.wav", ["split", "msp_split"]].tolist() == ["Test2", "Test2"]
    unlabeled = table[table["split"] == "unlabeled"]
    assert sorted(unlabeled.index) == ["MSP-PODCAST_0010_0001.wav", "MSP-PODCAST_0010_0002.wav"]
    assert unlabeled[list(ATTRIBUTES)].isna().all(axis=None)
    assert unlabeled["speaker"].eq("Unknown").all()
    assert table.loc["MSP-PODCAST_0006_0001.wav", "duration"] == pytest.approx(12.0)


def test_msp_podcast_paper_duration_window(tmp_path: Path) -> None:
    table = build_manifest("msp-podcast", _msp(tmp_path), min_duration=2.75, max_duration=11).table
    names = {Path(f).name for f in table["file"]}
    assert "MSP-PODCAST_0006_0001.wav" not in names  # 12 s
    assert "MSP-PODCAST_0010_0002.wav" not in names  # 2 s, unlabelled
    assert len(table) == 7
    with pytest.raises(CorpusError, match="must be below"):
        build_manifest("msp-podcast", tmp_path, min_duration=5, max_duration=3)
    with pytest.raises(CorpusError, match="No training segment lasts 20..30 s"):
        build_manifest("msp-podcast", tmp_path, min_duration=20, max_duration=30)


def test_msp_podcast_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="has no Audios/ folder"):
        build_manifest("msp-podcast", tmp_path)
    (tmp_path / "Audios").mkdir()
    with pytest.raises(CorpusError, match="holds no .wav files"):
        build_manifest("msp-podcast", tmp_path)
    _wav(tmp_path / "Audios" / "MSP-PODCAST_0001_0001.wav")
    with pytest.raises(CorpusError, match="has no Labels/ folder"):
        build_manifest("msp-podcast", tmp_path)
    (tmp_path / "Labels").mkdir()
    with pytest.raises(CorpusError, match="label file not found.*labels_consensus.csv, labels_concensus.csv"):
        build_manifest("msp-podcast", tmp_path)
    csv = tmp_path / "Labels" / "labels_consensus.csv"
    csv.write_text("FileName,EmoAct,EmoVal\nMSP-PODCAST_0001_0001.wav,4,4\n")
    with pytest.raises(CorpusError, match="lack the column\\(s\\) EmoDom, SpkrID, Split_Set"):
        build_manifest("msp-podcast", tmp_path)
    csv.write_text(",".join(MSP_COLUMNS) + "\nMSP-PODCAST_0001_0001.wav,N,high,4,4,1,Male,Train\n")
    with pytest.raises(CorpusError, match="EmoAct is not a number for 1 row.*MSP-PODCAST_0001_0001.wav=high"):
        build_manifest("msp-podcast", tmp_path)
    csv.write_text(",".join(MSP_COLUMNS) + "\nMSP-PODCAST_0001_0001.wav,N,4,4,4,1,Male,Test1\n")
    with pytest.raises(CorpusError, match="has a Train label row"):
        build_manifest("msp-podcast", tmp_path)
    csv.unlink()
    (tmp_path / "Labels" / "labels_consensus.json").write_text('"just a string"')
    with pytest.raises(CorpusError, match="unknown JSON shape"):
        build_manifest("msp-podcast", tmp_path)


# ---------------------------------------------------------------- registry, summary, CLI


def test_registry_rejects_unknown_recipes_and_options(tmp_path: Path) -> None:
    assert sorted(RECIPES) == ["cremad", "emodb", "msp-podcast", "ravdess", "synthetic"]
    with pytest.raises(CorpusError, match="Unknown corpus recipe 'iemocap'; expected one of msp-podcast"):
        build_manifest("iemocap", tmp_path)
    with pytest.raises(CorpusError, match=r"does not take n_files \(--n-files\); it accepts"):
        build_manifest("emodb", tmp_path, n_files=3)


def test_summary_counts_splits_speakers_and_labels(tmp_path: Path) -> None:
    text = summarize(build_manifest("msp-podcast", _msp(tmp_path)))
    lines = text.splitlines()
    assert lines[0] == "9 files, 6 speakers, 7 labelled, 2 unlabelled"
    assert [line.split()[0] for line in lines[1:]] == ["train", "development", "test", "Test2", "unlabeled"]
    assert lines[1].split()[1:] == ["4", "files", "3", "speakers", "4", "labelled"]


def test_cli_writes_a_manifest_that_reads_back(tmp_path: Path, capsys) -> None:
    root = _ravdess(tmp_path / "RAVDESS")
    out = tmp_path / "out" / "ravdess.csv"
    assert main(["corpus", "ravdess", str(root), "-o", str(out), "--seed", "4",
                 "--split-proportions", "0.5,0.25,0.25"]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {out}" in printed and "90 files, 6 speakers, 90 labelled, 0 unlabelled" in printed
    manifest = read_manifest(out)
    assert len(manifest) == 90 and manifest.table["file"].str.startswith(str(root)).all()
    assert not pd.read_csv(out)["file"].str.startswith("/").any()  # written relative to the CSV
    expected = build_manifest("ravdess", root, seed=4, proportions=(0.5, 0.25, 0.25)).table["split"]
    assert manifest.table["split"].tolist() == expected.tolist()


def test_cli_errors_exit_2_with_the_message(tmp_path: Path, capsys) -> None:
    assert main(["corpus", "emodb", str(tmp_path), "-o", str(tmp_path / "m.csv")]) == 2
    assert "serdistill corpus: error: EmoDB folder" in capsys.readouterr().err
    assert main(["corpus", "msp-podcast", str(tmp_path), "-o", "m.csv", "--paper-durations",
                 "--min-duration", "1"]) == 2
    assert "Use one or the other" in capsys.readouterr().err
    assert main(["corpus", "ravdess", str(tmp_path), "-o", "m.csv", "--split-proportions", "a,b"]) == 2
    assert "three numbers like 0.6,0.2,0.2" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


def test_cli_help_lists_every_recipe_with_one_line(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["corpus", "--help"])
    text = capsys.readouterr().out
    for name, recipe in RECIPES.items():
        assert f"  {name:<12} {recipe.summary}" in text
    assert "--paper-durations" in text and "--n-files" in text and "--norms" in text
