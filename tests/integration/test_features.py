"""Feature extraction on real EmoDB audio: reference values, checks, cache, workers, CLI."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from serdistill.data.audio import Rejection
from serdistill.data.cache import FeatureCache
from serdistill.base.errors import AudioError, ConfigError
from serdistill.data.features import (
    FeatureError,
    FeatureExtractor,
    FeatureSet,
    _Engine,
    extract_manifest,
    feature_dim,
    feature_names,
    feature_settings,
    features_for,
    read_features,
    with_features,
    write_features,
)
from serdistill.data.manifest import Manifest

opensmile = pytest.importorskip("opensmile")
RATE = 16000


@pytest.fixture(scope="module")
def real(emodb_files: list[Path]) -> list[Path]:
    """Six real utterances of different speakers."""
    return emodb_files[::90][:6]


@pytest.fixture(scope="module")
def reference(real: list[Path]) -> np.ndarray:
    """ComParE features of ``real`` from openSMILE called directly."""
    return opensmile.Smile(opensmile.FeatureSet.ComParE_2016).process_files([str(f) for f in real]).to_numpy()


def _extractor(**kwargs) -> FeatureExtractor:
    return FeatureExtractor(verbose=False, **kwargs)


def _speech(source: Path, seconds: float | None = None) -> np.ndarray:
    signal, rate = sf.read(source, dtype="float32")
    assert rate == RATE
    return signal if seconds is None else signal[4000 : 4000 + int(seconds * RATE)]


# ---------------------------------------------------------------- reference values and format


@pytest.mark.parametrize("feature_set", ["ComParE_2016", "eGeMAPSv02"])
def test_values_equal_opensmile_process_file(real: list[Path], feature_set: str) -> None:
    table = _extractor(feature_set=feature_set).process_files(real[:3])
    smile = opensmile.Smile(opensmile.FeatureSet[feature_set])
    for file in real[:3]:
        expected = smile.process_file(str(file)).to_numpy()[0]
        np.testing.assert_allclose(table.loc[str(file)].to_numpy(), expected, rtol=1e-7, atol=0)
    assert table.shape == (3, feature_dim(feature_set))


def test_table_is_float32_indexed_by_absolute_path_in_input_order(
    real: list[Path], reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(real[0].parent)
    order = [3, 0, 5, 1]
    table = _extractor().process_files([real[i].name for i in order])  # relative paths
    assert table.index.name == "file"
    # relative paths join the working folder as the OS reports it (os.getcwd(): symlinks resolved)
    assert table.index.tolist() == [os.path.join(os.getcwd(), real[i].name) for i in order]
    assert (table.dtypes == np.float32).all()
    assert table.columns.tolist() == feature_names("compare")
    assert table.shape[1] == FeatureSet.ComParE_2016.dim == 6373
    np.testing.assert_array_equal(table.to_numpy(), reference[order])


@pytest.mark.parametrize("alias", ["compare", "ComParE_2016", "COMPARE", FeatureSet.ComParE_2016])
def test_feature_set_names_and_aliases(alias) -> None:
    assert FeatureSet(alias) is FeatureSet.ComParE_2016
    assert FeatureSet("egemaps").dim == 88 == len(feature_names("egemaps"))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"feature_set": "mfcc"}, "feature set must be one of"),
        ({"num_workers": 0}, "num_workers must be an integer >= 1"),
        ({"num_workers": 1.5}, "num_workers must be an integer >= 1"),
        ({"on_error": "ignore"}, "on_error must be 'skip' or 'raise'"),
        ({"min_duration": -1}, "min_duration must be"),
    ],
)
def test_invalid_settings_are_named(kwargs: dict, fragment: str, real: list[Path]) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _extractor(**kwargs).process_files(real[:1])


# ---------------------------------------------------------------- bad audio


def _make(kind: str, folder: Path, source: Path) -> Path:
    """Write one bad (or odd) file of the given kind into ``folder``."""
    speech = _speech(source)
    path = folder / {"truncated_flac": "cut.flac", "random_bytes": "noise.flac"}.get(kind, f"{kind}.wav")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(1).bytes(5000))
    elif kind == "text":
        path.write_text("this is not audio\n")
    elif kind in ("truncated_wav", "header_only"):
        sf.write(folder / "full.wav", speech, RATE, subtype="PCM_16")
        data = (folder / "full.wav").read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "truncated_wav" else data[:44])
    elif kind == "truncated_mp3":
        if "MP3" not in sf.available_formats():
            pytest.skip("this libsndfile cannot write MP3")
        sf.write(folder / "full.mp3", speech, RATE, format="MP3", subtype="MPEG_LAYER_III")
        data = (folder / "full.mp3").read_bytes()
        path = folder / "cut.mp3"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_flac":
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "short_30ms":
        sf.write(path, _speech(source, 0.03), RATE, subtype="PCM_16")
    elif kind == "zeros":
        sf.write(path, np.zeros(RATE, np.float32), RATE, subtype="PCM_16")
    elif kind == "below_16_bit":
        sf.write(path, np.full(RATE, 1e-6, np.float32), RATE, subtype="FLOAT")
    elif kind == "nan_samples":
        bad = speech.copy()
        bad[100:110] = np.nan
        sf.write(path, bad, RATE, subtype="FLOAT")
    elif kind != "missing":
        raise AssertionError(kind)
    return path


BAD = [
    ("empty", "unreadable", "empty file"),
    ("random_bytes", "unreadable", "cannot decode"),
    ("text", "unreadable", "cannot decode"),
    ("missing", "unreadable", "cannot"),
    ("truncated_flac", "unreadable", "cannot decode"),
    ("truncated_wav", "truncated", "header declares 2.000 s"),
    ("header_only", "truncated", "got 0.000 s of audio"),
    ("truncated_mp3", "truncated", "but the header declares 2.000 s"),
    ("short_30ms", "too_short", "got 0.030 s of audio; expected at least 0.1 s"),
    ("zeros", "silent", "got silence"),
    ("below_16_bit", "silent", "got silence"),
    ("nan_samples", "nonfinite_samples", "got 10 NaN or infinite sample(s)"),
]


@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("kind, expected_kind, fragment", BAD)
def test_bad_file_is_rejected_and_the_rest_goes_on(
    kind: str, expected_kind: str, fragment: str, use_cache: bool, real: list[Path], reference: np.ndarray,
    tmp_path: Path,
) -> None:
    bad = str(_make(kind, tmp_path, real[0]))
    extractor = _extractor(cache_dir=tmp_path / "cache" if use_cache else None)
    table = extractor.process_files([real[0], bad, real[1]])
    assert table.index.tolist() == [str(real[0]), str(real[1])]
    np.testing.assert_array_equal(table.to_numpy(), reference[:2])
    assert len(extractor.rejected) == 1
    rejection = extractor.rejected[0]
    assert (rejection.file, rejection.kind) == (bad, expected_kind)
    assert fragment in rejection.reason
    assert extractor.stats.rejected == 1 and extractor.stats.extracted == 2
    if use_cache:  # rejections are not cached as features
        assert len(FeatureCache(tmp_path / "cache", feature_settings(), dim=6373)) == 2


@pytest.mark.parametrize("kind", ["text", "short_30ms", "zeros", "truncated_wav"])
def test_on_error_raise_names_the_file(kind: str, real: list[Path], tmp_path: Path) -> None:
    bad = _make(kind, tmp_path, real[0])
    with pytest.raises(AudioError, match=f"Audio file {bad} was rejected: got"):
        _extractor(on_error="raise").process_files([real[0], bad])


def test_audio_of_30_ms_gives_nan_features_and_is_rejected_for_them(real: list[Path], tmp_path: Path) -> None:
    short = str(_make("short_30ms", tmp_path, real[0]))
    extractor = _extractor(min_duration=0, cache_dir=tmp_path / "cache")
    table = extractor.process_files([short])
    assert len(table) == 0 and table.shape[1] == 6373
    assert extractor.rejected == [Rejection(short, extractor.rejected[0].reason, "nonfinite_features")]
    assert "returned 6373 of 6373 non-finite feature values" in extractor.rejected[0].reason
    assert len(FeatureCache(tmp_path / "cache", feature_settings(), dim=6373)) == 0


def test_stereo_44k_file_is_mixed_to_mono_and_resampled(real: list[Path], tmp_path: Path) -> None:
    soxr = pytest.importorskip("soxr")
    speech = soxr.resample(_speech(real[0]), RATE, 44100)
    stereo = np.stack([0.9 * speech, 0.5 * speech], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="PCM_24")
    table = _extractor().process_files([path])
    assert len(table) == 1
    read, _ = sf.read(path, dtype="float32")
    mono = soxr.resample(read.mean(axis=1, dtype=np.float32), 44100, RATE, quality="HQ")
    expected = opensmile.Smile().process_signal(mono, RATE).to_numpy()[0]
    np.testing.assert_array_equal(table.to_numpy()[0], expected)


def test_truncated_wav_allowed_on_request_and_checks_rerun_on_cache_hits(real: list[Path], tmp_path: Path) -> None:
    cut = str(_make("truncated_wav", tmp_path, real[0]))
    cache = tmp_path / "cache"
    allowed = _extractor(cache_dir=cache, allow_truncated=True)
    assert allowed.process_files([cut]).index.tolist() == [cut] and not allowed.rejected
    strict = _extractor(cache_dir=cache)
    assert len(strict.process_files([cut])) == 0
    assert strict.stats.cached == 0 and strict.rejected[0].kind == "truncated"
    long_only = _extractor(cache_dir=cache, allow_truncated=True, min_duration=1.5)
    assert len(long_only.process_files([cut])) == 0 and long_only.rejected[0].kind == "too_short"


# ---------------------------------------------------------------- cache and workers


def _count_extractions(monkeypatch: pytest.MonkeyPatch, *, fail_at: int | None = None) -> list[int]:
    calls: list[int] = []
    original = _Engine.extract

    def counting(self, signal):
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a run
        return original(self, signal)

    monkeypatch.setattr(_Engine, "extract", counting)
    return calls


def test_second_run_and_new_files_extract_only_what_is_new(
    real: list[Path], reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_extractions(monkeypatch)
    extractor = _extractor(cache_dir=tmp_path / "cache")
    first = extractor.process_files(real[:3])
    assert len(calls) == 3 and (extractor.stats.extracted, extractor.stats.cached) == (3, 0)
    again = extractor.process_files(real[:3])
    assert len(calls) == 3 and (extractor.stats.extracted, extractor.stats.cached) == (0, 3)
    np.testing.assert_array_equal(again.to_numpy(), first.to_numpy())
    more = _extractor(cache_dir=tmp_path / "cache").process_files(real[:5])
    assert len(calls) == 5
    np.testing.assert_array_equal(more.to_numpy(), reference[:5])
    copy = tmp_path / "renamed.flac"  # the key is the content, not the path
    shutil.copy(real[0], copy)
    assert _extractor(cache_dir=tmp_path / "cache").process_files([copy]).index.tolist() == [str(copy)]
    assert len(calls) == 5
    egemaps = _extractor(cache_dir=tmp_path / "cache", feature_set="egemaps").process_files(real[:1])
    assert len(calls) == 6 and egemaps.shape == (1, 88)  # other settings, other entries


def test_interrupted_run_keeps_finished_files(real: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_extractions(monkeypatch, fail_at=3)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        _extractor(cache_dir=cache).process_files(real[:4])
    assert len(FeatureCache(cache, feature_settings(), dim=6373)) == 2
    resumed = _extractor(cache_dir=cache)
    resumed.process_files(real[:4])
    assert (resumed.stats.cached, resumed.stats.extracted, len(calls)) == (2, 2, 5)


def test_run_stopped_by_a_bad_file_keeps_the_files_before_it(real: list[Path], tmp_path: Path) -> None:
    bad = _make("short_30ms", tmp_path, real[0])
    cache = tmp_path / "cache"
    with pytest.raises(AudioError, match=str(bad)):
        _extractor(cache_dir=cache, on_error="raise").process_files([real[0], real[1], bad, real[2]])
    assert len(FeatureCache(cache, feature_settings(), dim=6373)) == 2


def test_damaged_cache_entry_is_a_miss(real: list[Path], reference: np.ndarray, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _extractor(cache_dir=cache).process_files(real[:1])
    (entry,) = (cache).glob("*/??/*.sdf")
    entry.write_bytes(entry.read_bytes()[:100])
    extractor = _extractor(cache_dir=cache)
    np.testing.assert_array_equal(extractor.process_files(real[:1]).to_numpy(), reference[:1])
    assert extractor.stats.extracted == 1


@pytest.mark.parametrize("use_cache", [False, True])
def test_one_and_two_workers_give_identical_results(real: list[Path], tmp_path: Path, use_cache: bool) -> None:
    bad = _make("text", tmp_path, real[0])
    files = [real[0], real[1], bad, real[2], real[3], real[4], real[0]]  # a bad file and a duplicate
    tables, rejected = [], []
    for workers in (1, 2):
        extractor = _extractor(num_workers=workers, cache_dir=tmp_path / f"cache{workers}" if use_cache else None)
        tables.append(extractor.process_files(files))
        rejected.append(extractor.rejected)
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
    assert tables[0].index.tolist() == [str(f) for f in files if f != bad]
    assert rejected[0] == rejected[1] and [r.file for r in rejected[0]] == [str(bad)]


def test_a_dead_worker_is_a_clear_error_and_the_next_call_works(
        real: list[Path], reference: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing
    import signal

    from serdistill.base.errors import WorkerError

    original = _Engine.extract
    victim = np.asarray(_speech(real[2]), np.float32)

    def dying(self, signal_):  # the forked worker inherits this: it dies on real[2], as if OOM-killed
        if len(signal_) == len(victim) and np.array_equal(signal_, victim):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, signal_)

    monkeypatch.setattr(_Engine, "extract", dying)
    extractor = _extractor(num_workers=2)
    with pytest.raises(WorkerError, match="worker process died.*Run the command again"):
        extractor.process_files(real[:4])
    assert not multiprocessing.active_children()
    monkeypatch.setattr(_Engine, "extract", original)
    np.testing.assert_array_equal(extractor.process_files(real[2:4]).to_numpy(), reference[2:4])


def test_an_error_in_the_parent_stops_the_workers_and_keeps_finished_files(
        real: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from serdistill.data import features

    received: list[str] = []
    original = features._Run._receive

    def receive(self, key, indices, outcome):
        if received:
            raise KeyboardInterrupt  # Ctrl-C after the first file came back
        received.append(key)
        original(self, key, indices, outcome)

    monkeypatch.setattr(features._Run, "_receive", receive)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        _extractor(num_workers=2, cache_dir=cache).process_files(real)
    assert not multiprocessing.active_children()
    assert len(FeatureCache(cache, feature_settings(), dim=6373)) == 1


# ---------------------------------------------------------------- tables, alignment, CLI


def _manifest(files: list[Path], splits: list[str]) -> Manifest:
    frame = pd.DataFrame({"file": [str(f) for f in files], "speaker": "s", "split": splits,
                          "arousal": 1.0, "valence": 2.0, "dominance": 3.0})
    return Manifest.from_frame(frame)


def test_parquet_round_trip_is_float32_and_keeps_order(real: list[Path], tmp_path: Path) -> None:
    table = _extractor().process_files(real[:3])
    path = write_features(table, tmp_path / "out" / "features.parquet")
    back = read_features(path)
    pd.testing.assert_frame_equal(back, table, check_exact=True)
    assert back.attrs["serdistill"]["feature_set"] == "ComParE_2016"
    assert not list(path.parent.glob(".*.tmp"))


def test_features_for_aligns_to_manifest_order_and_names_missing_files(
    real: list[Path], reference: np.ndarray, tmp_path: Path
) -> None:
    table = _extractor().process_files(real[:3])
    manifest = _manifest([real[2], real[0], real[1]], ["train", "test", "train"])
    X = features_for(manifest, table)
    assert X.dtype == np.float32 and X.shape == (3, 6373)
    np.testing.assert_array_equal(X, reference[[2, 0, 1]])
    np.testing.assert_array_equal(features_for([real[1]], table), reference[[1]])
    bigger = _manifest(real[:5], ["train"] * 5)
    with pytest.raises(FeatureError, match=rf"2 of 5 file\(s\) have no features: {real[3]}, {real[4]}"):
        features_for(bigger, table)
    assert with_features(bigger, table).files == [str(f) for f in real[:3]]
    broken = table.copy()
    broken.iloc[1, 7] = np.nan
    with pytest.raises(FeatureError, match=f"1 file\\(s\\) have NaN or infinite features: {real[1]}"):
        features_for(manifest, broken)


@pytest.mark.parametrize("content, fragment", [(None, "does not exist"), (b"PAR1 nonsense", "not a readable Parquet")])
def test_read_features_errors(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "features.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FeatureError, match=fragment):
        read_features(path)


def test_cli_writes_table_rejections_and_summary(
    real: list[Path], reference: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from serdistill.runtime.cli import main

    bad = _make("zeros", tmp_path, real[0])
    manifest = _manifest([real[0], bad, real[1]], ["train", "train", "test"]).write(tmp_path / "m.csv")
    out = tmp_path / "features.parquet"
    argv = [str(manifest), "-o", str(out), "--workers", "2", "--cache-dir", str(tmp_path / "c"), "-q"]
    assert main(["extract", *argv]) == 0
    printed = capsys.readouterr().out
    assert "2 of 3 file(s)" in printed and "2 extracted, 0 from the cache" in printed
    assert "Rejected: 1 file(s), listed in" in printed
    np.testing.assert_array_equal(read_features(out).to_numpy(), reference[:2])
    rejected = pd.read_csv(str(out) + ".rejected.csv")
    assert rejected[["file", "kind"]].values.tolist() == [[str(bad), "silent"]]
    assert main(["extract", *argv]) == 0
    assert "0 extracted, 2 from the cache" in capsys.readouterr().out
    assert main(["extract", *argv, "--on-error", "raise"]) == 2
    assert f"Audio file {bad} was rejected" in capsys.readouterr().err


def test_extract_manifest_writes_both_files(real: list[Path], tmp_path: Path) -> None:
    manifest = _manifest(real[:2], ["train", "test"])
    result = extract_manifest(manifest, output=tmp_path / "f.parquet", verbose=False)
    assert result.output == tmp_path / "f.parquet" and result.stats.files == 2
    assert pd.read_csv(result.rejected_path).empty
    assert result.features.index.tolist() == manifest.files


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"SERDISTILL_CACHE": "{tmp}/sc", "XDG_CACHE_HOME": "{tmp}/xdg"}, "{tmp}/sc/features"),
        ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "{tmp}/xdg/serdistill/features"),
        ({"HOME": "{tmp}/home"}, "{tmp}/home/.cache/serdistill/features"),
    ],
)
def test_cli_default_cache_dir(
    env: dict, expected: str, real: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serdistill.runtime.cli import main

    for name in ("SERDISTILL_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    manifest = _manifest(real[:1], ["train"]).write(tmp_path / "m.csv")
    assert main(["extract", str(manifest), "-o", str(tmp_path / "f.parquet"), "--workers", "1", "-q"]) == 0
    assert len(FeatureCache(expected.format(tmp=tmp_path), feature_settings(), dim=6373)) == 1
