"""Long recordings: speech segments found by the VAD, predicted one by one, streamed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("silero_vad")
pytest.importorskip("onnxruntime")

from clirun import run_cli  # noqa: E402
from toy import compare_bundle  # noqa: E402

from serdistill.deploy.bundle import load_bundle  # noqa: E402
from serdistill.data.segments import SegmentOptions, find_segments, fit_segments, stream  # noqa: E402

pytestmark = pytest.mark.slow
RATE = 16000


def _trim(x: np.ndarray) -> np.ndarray:
    """An utterance without its leading and trailing silence (10 ms frames 35 dB below the loudest)."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-35 / 20))
    return x[loud[0] * 160 : (loud[-1] + 1) * 160]


@pytest.fixture(scope="module")
def recording(emodb_files: list[Path], tmp_path_factory) -> tuple[Path, list[tuple[float, float]]]:
    """About 50 s: EmoDB utterances (trimmed, 1.2 s or longer) joined by 1 to 2 s of near-silence."""
    rng = np.random.default_rng(0)
    parts, truth, t = [np.zeros(RATE, np.float32)], [], 1.0
    for file in emodb_files[::37]:
        utterance = _trim(sf.read(file, dtype="float32")[0])
        if len(utterance) < 1.2 * RATE:
            continue
        truth.append((t, t + len(utterance) / RATE))
        parts.append(utterance)
        t += len(utterance) / RATE
        gap = int(rng.uniform(1.0, 2.0) * RATE)
        parts.append(np.zeros(gap, np.float32))
        t += gap / RATE
    signal = np.concatenate(parts)
    signal += (rng.normal(size=len(signal)) * 1e-4).astype(np.float32)
    path = tmp_path_factory.mktemp("long") / "joined.wav"
    sf.write(path, signal, RATE, subtype="PCM_16")
    return path, truth


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return compare_bundle(tmp_path_factory.mktemp("segments-bundle"))


def test_the_vad_finds_each_utterance_within_0_3_s(recording) -> None:
    path, truth = recording
    segments = find_segments(path)
    assert len(segments) == len(truth) >= 10
    for (start, end), segment in zip(truth, segments):
        assert abs(segment.start - start) <= 0.3 and abs(segment.end - end) <= 0.3, (start, end, segment)


def test_segments_are_fitted_to_their_bounds() -> None:
    options = SegmentOptions(min_seconds=1.0, max_seconds=4.0)
    segments = fit_segments([(0.2, 0.5), (3.0, 3.3), (3.9, 14.0), (20.0, 20.4)], 20.6, options)
    assert all(1.0 - 1e-9 <= s.duration <= 4.0 + 1e-9 for s in segments)
    assert segments[0].start == 0.0  # widened, but not before the start of the file
    assert segments[-1].end == pytest.approx(20.6)  # nor past its end
    assert all(a.end <= b.start + 1e-9 for a, b in zip(segments, segments[1:]))  # no overlaps


def test_a_resampled_stereo_file_streams_in_blocks(recording, tmp_path: Path) -> None:
    path, _ = recording
    signal, _ = sf.read(path, dtype="float32")
    import soxr

    stereo = soxr.resample(signal, RATE, 44100)
    sf.write(tmp_path / "s.flac", np.stack([stereo, stereo], 1), 44100)
    blocks = list(stream(tmp_path / "s.flac", block_seconds=5.0))
    assert len(blocks) >= 10 and max(len(b) for b in blocks) <= 5 * RATE + 1000
    assert sum(len(b) for b in blocks) == pytest.approx(len(signal), abs=50)


def test_segment_predictions_equal_each_cut_out_segment_predicted_alone(recording, bundle: Path,
                                                                        tmp_path: Path) -> None:
    path, _ = recording
    model = load_bundle(bundle)
    table, rejected = model.predict_segments([path])
    assert not rejected and len(table) >= 10
    assert list(table.columns) == ["file", "start", "end", "arousal", "valence", "dominance",
                                   "arousal_std", "valence_std", "dominance_std"]
    signal, rate = sf.read(path, dtype="int16")
    cut = []
    for i, row in table.iterrows():
        file = tmp_path / f"seg{i:03d}.wav"
        sf.write(file, signal[int(round(row.start * rate)) : int(round(row.end * rate))], rate, subtype="PCM_16")
        cut.append(str(file))
    alone, rejected = model.predict_files(cut)
    assert not rejected
    columns = ["arousal", "valence", "dominance", "arousal_std", "valence_std", "dominance_std"]
    np.testing.assert_allclose(table[columns].to_numpy(), alone[columns].to_numpy(), atol=1e-5)


def test_truncated_and_corrupt_long_files_are_reported_not_fatal(recording, bundle: Path, tmp_path: Path) -> None:
    path, _ = recording
    data = path.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(1).bytes(200_000))
    sf.write(tmp_path / "dither.wav", (np.random.default_rng(2).integers(-1, 2, 40 * RATE) / 32768).astype(np.float32),
             RATE, subtype="PCM_16")
    out = tmp_path / "timeline.csv"
    code, _, err = run_cli(["predict", str(bundle), str(path), str(tmp_path / "cut.wav"), str(tmp_path / "noise.wav"),
                            str(tmp_path / "dither.wav"), "--segments", "-o", str(out), "-q", "--no-cache"])
    assert code == 0, err
    assert set(pd.read_csv(out)["file"]) == {str(path)}
    rejected = pd.read_csv(tmp_path / "timeline.csv.rejected.csv")
    kinds = {Path(f).name: k for f, k in zip(rejected["file"], rejected["kind"])}
    assert kinds == {"cut.wav": "truncated", "noise.wav": "unreadable", "dither.wav": "no_speech"}


def test_long_files_are_segmented_by_default_and_short_ones_predicted_whole(
        recording, bundle: Path, emodb_files: list[Path], tmp_path: Path) -> None:
    path, truth = recording
    out = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(bundle), str(emodb_files[0]), str(path), "-o", str(out), "-q",
                            "--plot", str(tmp_path / "plots")])
    assert code == 0, err
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["file", "start", "end"]
    assert table["file"].tolist() == [str(emodb_files[0])] + [str(path)] * len(truth)  # input order
    assert table["start"].iloc[0] == 0.0 and table["end"].iloc[0] == pytest.approx(2.0)
    assert (tmp_path / "plots" / "joined.png").stat().st_size > 10_000
    code, _, err = run_cli(["predict", str(bundle), str(path), "-o", str(out), "-q", "--no-segments"])
    assert code == 0, err
    assert len(pd.read_csv(out)) == 1 and "start" not in pd.read_csv(out).columns


def test_labels_are_shown_beside_predictions_for_manifest_inputs(bundle: Path, emodb_root: Path,
                                                                 tmp_path: Path) -> None:
    from serdistill.data.corpora import build_manifest

    manifest = build_manifest("emodb")
    manifest.write(tmp_path / "m.csv")
    out = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(bundle), str(tmp_path / "m.csv"), "--split", "test", "--labels",
                            "--categories", "-o", str(out), "-q", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, err
    table = pd.read_csv(out)
    test = manifest.split("test").table.set_index("file")
    assert list(table.columns[1:4]) == ["arousal", "arousal_label", "valence"]
    np.testing.assert_allclose(table["arousal_label"], test.loc[table["file"], "arousal"], atol=1e-5)
    from serdistill.data.corpora.norms import load_norms

    norms = load_norms()
    assert set(table["category"]) <= set(norms.emotions)
    # each row's category is the nearest norm in the 0..1-normalised space, and no other is nearer
    points = (table[["arousal", "valence", "dominance"]].to_numpy() - 1) / 6
    anchors = (norms.table[["arousal", "valence", "dominance"]].to_numpy() - 1) / 6
    distances = np.linalg.norm(points[:, None] - anchors[None], axis=2)
    np.testing.assert_allclose(table["category_distance"], distances.min(axis=1), atol=1e-4)
    # labels derived from a category's norms (strength 1) map back to that category
    label_rows = test.loc[table["file"], ["arousal", "valence", "dominance"]]
    full = test.loc[table["file"], "strength"].to_numpy() == 1.0
    named, _ = norms.nearest(label_rows[full])
    assert (named == test.loc[table["file"], "category"].to_numpy()[full]).all()
