"""The manifest: reading, validation messages, splits, round trip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serdistill.base.errors import ManifestError
from serdistill.data.manifest import ATTRIBUTES, Manifest, read_manifest

HEADER = "file,speaker,split,arousal,valence,dominance"


def _corpus(tmp_path: Path, rows: list[str], *, header: str = HEADER, make_files: bool = True) -> Path:
    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    if make_files:
        for row in rows:
            name = row.split(",")[0]
            if name:
                (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / name).write_bytes(b"RIFF")
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_reads_labels_paths_and_extra_columns(tmp_path: Path) -> None:
    path = _corpus(
        tmp_path,
        [
            "audio/a.wav,s1,train,3.5,4,2.25,angry",
            "audio/b.wav,s2,development,1,7,4,calm",
            "audio/c.wav,s3,unlabeled,,,,",
        ],
        header=HEADER + ",category",
    )
    manifest = read_manifest(path)
    assert manifest.files == [str(tmp_path / "audio" / n) for n in ("a.wav", "b.wav", "c.wav")]
    assert manifest.splits == ["train", "development", "unlabeled"]
    labels = manifest.labels()
    np.testing.assert_array_equal(labels[:2], [[3.5, 4, 2.25], [1, 7, 4]])
    assert np.isnan(labels[2]).all()
    assert manifest.table["category"].tolist()[:2] == ["angry", "calm"]
    assert manifest.labels("valence").tolist()[:2] == [4.0, 7.0]


def test_relative_paths_resolve_against_the_manifest_folder_not_the_cwd(tmp_path: Path, monkeypatch) -> None:
    path = _corpus(tmp_path, ["audio/a.wav,s1,train,1,2,3"])
    monkeypatch.chdir(tmp_path / "audio")
    assert read_manifest(path).files == [str(tmp_path / "audio" / "a.wav")]


def test_write_round_trip_keeps_rows_and_writes_relative_paths(tmp_path: Path) -> None:
    path = _corpus(tmp_path, ["audio/a.wav,s1,train,1,2,3", "audio/b.wav,s1,test,,5,"])
    manifest = read_manifest(path)
    out = manifest.write(tmp_path / "copy.csv")
    assert pd.read_csv(out)["file"].tolist() == ["audio/a.wav", "audio/b.wav"]
    again = read_manifest(out)
    pd.testing.assert_frame_equal(again.table, manifest.table)


def test_split_selects_rows_and_names_unknown_split(tmp_path: Path) -> None:
    path = _corpus(tmp_path, ["audio/a.wav,s1,train,1,2,3", "audio/b.wav,s2,Test2,4,5,6"])
    manifest = read_manifest(path)
    assert manifest.split("Test2").files == [str(tmp_path / "audio" / "b.wav")]
    with pytest.raises(ManifestError, match=r"Split 'test' is not in manifest .*'train', 'Test2'"):
        manifest.split("test")


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = _corpus(tmp_path, ["audio/a.wav,s1,train"], header="file,speaker,split")
    with pytest.raises(ManifestError, match="lacks the column\\(s\\) arousal, valence, dominance"):
        read_manifest(path)


def test_missing_files_are_counted_and_the_first_ten_shown(tmp_path: Path) -> None:
    rows = [f"audio/f{i:02d}.wav,s1,train,1,2,3" for i in range(12)]
    path = _corpus(tmp_path, rows, make_files=False)
    (tmp_path / "audio" / "f00.wav").write_bytes(b"RIFF")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert "11 of 12 audio file(s) do not exist" in message
    assert "f10.wav" in message and "f11.wav" not in message  # the first ten of the missing ones
    assert read_manifest(path, check_files=False).files[0].endswith("f00.wav")


def test_duplicates_are_reported(tmp_path: Path) -> None:
    path = _corpus(tmp_path, ["audio/a.wav,s1,train,1,2,3", "audio/./a.wav,s1,test,1,2,3"])
    with pytest.raises(ManifestError, match=r"1 file\(s\) are listed more than once: .*a\.wav"):
        read_manifest(path)


def test_labels_that_are_not_numbers_are_shown_with_their_rows(tmp_path: Path) -> None:
    path = _corpus(tmp_path, ["audio/a.wav,s1,train,1,2,3", "audio/b.wav,s1,train,high,2,3"])
    with pytest.raises(ManifestError, match=r"1 arousal label\(s\) are not numbers \(CSV rows 3: 'high'\)"):
        read_manifest(path)


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = _corpus(tmp_path, ["audio/a.wav,s1,,x,2,3", "audio/a.wav,s1,train,1,2,y"])
    with pytest.raises(ManifestError, match="has 4 problem") as info:
        read_manifest(path)
    for part in ("no split", "arousal label", "dominance label", "more than once"):
        assert part in str(info.value)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (["audio/a.wav,s1,test,1,2,3"], "train split is empty"),
        (["audio/a.wav,s1,train,,,"], "train split has no labels"),
    ],
)
def test_train_split_must_exist_and_be_labelled(tmp_path: Path, rows: list[str], expected: str) -> None:
    path = _corpus(tmp_path, rows)
    with pytest.raises(ManifestError, match=expected):
        read_manifest(path)
    assert len(read_manifest(path, require_train=False)) == 1


def test_a_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="serdistill corpus NAME ROOT"):
        read_manifest(tmp_path / "absent.csv")


def test_from_frame_validates_like_read(tmp_path: Path) -> None:
    frame = pd.DataFrame({"file": ["x.wav"], "speaker": ["s"], "split": ["train"],
                          **{a: [1.0] for a in ATTRIBUTES}})
    with pytest.raises(ManifestError, match="do not exist"):
        Manifest.from_frame(frame, base=tmp_path)
    (tmp_path / "x.wav").write_bytes(b"")
    assert Manifest.from_frame(frame, base=tmp_path).files == [str(tmp_path / "x.wav")]
