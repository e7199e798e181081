"""Nothing wrong passes silently: bad input of every kind, through the commands and the service.

Each case builds the bad input itself (no shared data needed): damaged bundles and cache
entries, labels off the scale, killed parents, outputs that are folders, symlinks that lead
nowhere, and recordings without speech; plus the probe's bad audio, which must keep being
rejected with the same kind by ``serdistill predict`` and by ``POST /predict``.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("opensmile")

from clirun import run_cli  # noqa: E402
from toy import TINY_SETS, compare_bundle  # noqa: E402

from serdistill.deploy.bundle import FILES, IntegrityWarning, load_bundle  # noqa: E402
from serdistill.data.cache import FeatureCache  # noqa: E402
from serdistill.base.errors import BundleError  # noqa: E402
from serdistill.data.features import FeatureExtractor, feature_settings, read_features  # noqa: E402

pytestmark = pytest.mark.slow
RATE = 16000


def _speechlike(seconds: float, *, seed: int = 1, amplitude: float = 0.3) -> np.ndarray:
    """A voiced-sounding signal: a 140 Hz tone, syllable-rate amplitude modulation, a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    return (amplitude * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def _write(path: Path, signal: np.ndarray, rate: int = RATE, **kwargs) -> Path:
    sf.write(path, signal, rate, **kwargs)
    return path


def _one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("serdistill")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A ComParE bundle trained in seconds on random features (predicts from real audio)."""
    return compare_bundle(tmp_path_factory.mktemp("bad-bundle"))


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy of the bundle that a test may damage."""
    return Path(shutil.copytree(bundle, tmp_path / "copy.bundle"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("speech") / "speech.wav", _speechlike(1.5), subtype="PCM_16")


def _nan_weights(bundle: Path) -> None:
    """Rewrite weights.pt with NaN weights, the file keeping its size (as damage in place would)."""
    import torch

    path = bundle / "weights.pt"
    size = path.stat().st_size
    tensors = torch.load(path, weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
               path)
    if path.stat().st_size != size:  # torch wrote a different size: record it, as only the content changed
        info = json.loads((bundle / "bundle.json").read_text())
        info["files"]["weights.pt"]["bytes"] = path.stat().st_size
        (bundle / "bundle.json").write_text(json.dumps(info))


def _change_in_place(path: Path) -> None:
    """Change one digit of a JSON file, keeping its size."""
    text = path.read_text()
    i = next(i for i, c in enumerate(text) if c.isdigit() and c != "7")
    path.write_text(text[:i] + "7" + text[i + 1 :])


def _strip_checksums(bundle: Path) -> None:
    info = json.loads((bundle / "bundle.json").read_text())
    for entry in info["files"].values():
        entry.pop("sha256")
    (bundle / "bundle.json").write_text(json.dumps(info))


# ---------------------------------------------------------------- 1. checksummed bundles


def test_a_bundle_records_a_sha256_per_file(bundle: Path) -> None:
    import hashlib

    info = json.loads((bundle / "bundle.json").read_text())
    assert set(info["files"]) == set(FILES) - {"bundle.json"}
    for name, entry in info["files"].items():
        assert entry["sha256"] == hashlib.sha256((bundle / name).read_bytes()).hexdigest(), name


@pytest.mark.parametrize("name", ["weights.pt", "normaliser.json", "metrics.json", "model.json"])
def test_a_file_changed_in_place_is_refused_by_name(copy: Path, name: str) -> None:
    size = (copy / name).stat().st_size
    if name == "weights.pt":
        _nan_weights(copy)
    else:
        _change_in_place(copy / name)
        assert (copy / name).stat().st_size == size
    with pytest.raises(BundleError, match=rf"{name} does not match the SHA-256"):
        load_bundle(copy)


def test_commands_and_service_refuse_a_damaged_bundle_in_one_line(copy: Path, speech: Path, tmp_path: Path) -> None:
    _nan_weights(copy)
    out = tmp_path / "predictions.csv"
    code, _, err = run_cli(["predict", str(copy), str(speech), "-o", str(out), "--no-cache", "-q"])
    _one_line_error(code, err, "weights.pt", "SHA-256")
    assert not out.exists()
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"file": [str(speech)] * 1, "speaker": ["a"], "split": ["test"], "arousal": [4.0],
                  "valence": [4.0], "dominance": [4.0]}).to_csv(manifest, index=False)
    code, _, err = run_cli(["evaluate", str(copy), str(manifest), "-q"])
    _one_line_error(code, err, "weights.pt")
    from serdistill.deploy.serve import create_app

    with pytest.raises(BundleError, match="weights.pt"):
        create_app(copy)


def test_an_old_bundle_without_checksums_loads_with_a_warning(copy: Path) -> None:
    _strip_checksums(copy)
    with pytest.warns(IntegrityWarning, match="no checksum"):
        load_bundle(copy)


def test_non_finite_outputs_are_an_error_never_an_empty_row_or_a_500(copy: Path, speech: Path,
                                                                      tmp_path: Path) -> None:
    _nan_weights(copy)
    _strip_checksums(copy)  # an old bundle: nothing tells the damage before the model runs
    out = tmp_path / "predictions.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrityWarning)
        code, _, err = run_cli(["predict", str(copy), str(speech), "-o", str(out), "--no-cache", "-q"])
        _one_line_error(code, err, "non-finite predictions")
        assert not out.exists()
        with pytest.raises(BundleError, match="non-finite"):
            load_bundle(copy).predict_features(np.ones((2, 6373), np.float32))
        fastapi = pytest.importorskip("fastapi")
        pytest.importorskip("httpx")
        from fastapi.testclient import TestClient

        from serdistill.deploy.serve import create_app

        assert fastapi
        for backend in ("onnx", "torch"):
            with TestClient(create_app(copy, backend=backend), raise_server_exceptions=False) as client:
                response = client.post("/predict", files={"file": ("s.wav", speech.read_bytes(), "audio/wav")})
                assert response.status_code == 500, response.text
                answer = response.json()  # valid JSON, not a serialisation failure
                assert answer["kind"] == "model_error" and "non-finite" in answer["detail"], backend


# ---------------------------------------------------------------- 2. verified cache entries


def test_a_cache_entry_rewritten_with_wrong_finite_values_is_extracted_again(speech: Path, tmp_path: Path,
                                                                              caplog) -> None:
    cache = tmp_path / "cache"
    first = FeatureExtractor(cache_dir=cache, verbose=False).process_files([speech])
    (entry,) = cache.glob("*/??/*.sdf")
    data = bytearray(entry.read_bytes())
    payload = np.frombuffer(bytes(data[24:]), dtype="<f4").copy()
    payload[:10] *= 2.0  # finite, same shape, wrong; the checksum left as it was
    data[24:] = payload.tobytes()
    entry.write_bytes(bytes(data))
    extractor = FeatureExtractor(cache_dir=cache, verbose=False)
    with caplog.at_level(logging.WARNING, logger="serdistill.data.cache"):
        second = extractor.process_files([speech])
    assert "does not match its checksum" in caplog.text and entry.name in caplog.text
    assert extractor.stats.extracted == 1 and extractor.stats.cached == 0
    np.testing.assert_array_equal(second.to_numpy(), first.to_numpy())
    again = FeatureExtractor(cache_dir=cache, verbose=False)  # the entry was rewritten: a hit now
    np.testing.assert_array_equal(again.process_files([speech]).to_numpy(), first.to_numpy())
    assert again.stats.cached == 1


def test_an_entry_copied_under_another_audios_name_does_not_match(speech: Path, tmp_path: Path) -> None:
    other = _write(tmp_path / "other.wav", _speechlike(1.2, seed=5), subtype="PCM_16")
    cache = tmp_path / "cache"
    FeatureExtractor(cache_dir=cache, verbose=False).process_files([speech, other])
    from serdistill.data.cache import content_hash

    store = FeatureCache(cache, feature_settings(), dim=6373)
    a, b = store.entry_path(content_hash(speech)), store.entry_path(content_hash(other))
    shutil.copyfile(a, b)
    assert store.get(content_hash(other)) is None and store.get(content_hash(speech)) is not None


# ---------------------------------------------------------------- 3. labels on the scale


def _bad_manifest(manifest: Path, folder: Path, value: float, attribute: str = "arousal") -> tuple[Path, str]:
    frame = pd.read_csv(manifest)
    row = int(np.flatnonzero(frame["split"] == "train")[3])
    frame.loc[row, attribute] = value
    out = folder / "bad.csv"
    frame.to_csv(out, index=False)
    return out, frame.loc[row, "file"]


@pytest.fixture(scope="module")
def tiny_bundle(tiny_corpus, tmp_path_factory) -> Path:
    manifest, features = tiny_corpus
    out = tmp_path_factory.mktemp("tiny-bundle") / "tiny.bundle"
    code, _, err = run_cli(["train", str(manifest), "--features", str(features), "-o", str(out), "-q",
                            "--threads", "1", "--workers", "1", *TINY_SETS])
    assert code == 0, err
    return out


@pytest.mark.parametrize("value", [9.5, -3.0, 100.0])
def test_train_and_evaluate_refuse_labels_off_the_scale_naming_file_and_value(
        tiny_corpus, tiny_bundle: Path, tmp_path: Path, value: float) -> None:
    manifest, features = tiny_corpus
    bad, file = _bad_manifest(manifest, tmp_path, value)
    code, _, err = run_cli(["train", str(bad), "--features", str(features), "-o", str(tmp_path / "b"), "-q",
                            *TINY_SETS])
    assert code == 2 and "Traceback" not in err
    assert "outside the scale 1..7" in err and os.path.basename(file) in err and f"{value:g}" in err
    assert not (tmp_path / "b").exists()
    test_bad = pd.read_csv(bad)
    test_bad.loc[test_bad["split"] == "test", "arousal"] = value
    test_bad.to_csv(bad, index=False)
    code, _, err = run_cli(["evaluate", str(tiny_bundle), str(bad), "--features", str(features), "-q"])
    assert code == 2 and "outside the scale 1..7" in err and f"{value:g}" in err


def test_out_of_range_labels_can_be_kept_or_clipped_on_request(tiny_corpus, tiny_bundle: Path, tmp_path: Path,
                                                               caplog) -> None:
    manifest, features = tiny_corpus
    bad, file = _bad_manifest(manifest, tmp_path, 9.5)
    from serdistill.data.manifest import read_manifest

    with caplog.at_level(logging.WARNING, logger="serdistill.data.manifest"):
        kept = read_manifest(bad, check_files=False, out_of_range="warn")
        clipped = read_manifest(bad, check_files=False, out_of_range="clip")
    assert caplog.text.count("outside the scale 1..7") == 2 and "clipped" in caplog.text
    row = kept.files.index(file)
    assert kept.table["arousal"][row] == 9.5 and clipped.table["arousal"][row] == 7.0
    assert read_manifest(bad, check_files=False, label_range=(0, 10)).table["arousal"][row] == 9.5
    code, out, err = run_cli(["evaluate", str(tiny_bundle), str(bad), "--features", str(features), "-q",
                              "--split", "train", "--out-of-range", "clip"])
    assert code == 0, err
    code, _, err = run_cli(["train", str(bad), "--features", str(features), "-o", str(tmp_path / "wide.bundle"),
                            "-q", "--threads", "1", "--workers", "1", "--label-range", "0,10", *TINY_SETS])
    assert code == 0, err
    assert load_bundle(tmp_path / "wide.bundle").label_range == (0.0, 10.0)
    assert load_bundle(tiny_bundle).label_range == (1.0, 7.0)


# ---------------------------------------------------------------- 4. no orphaned workers


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie has exited; only its parent's bookkeeping is left
            alive.add(pid)
    return alive


def _kill_and_watch(command: list[str], workers: int, cwd: Path) -> tuple[set[int], float]:
    """Start ``command``, wait for ``workers`` descendants, SIGKILL it; the survivors after 5 s, and when."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc to follow the process tree")
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: set[int] = set()
        while time.monotonic() < deadline and process.poll() is None:
            children = _descendants(process.pid)
            if len(children) >= workers:
                break
            time.sleep(0.1)
        assert len(children) >= workers, f"only {len(children)} worker(s) started"
        time.sleep(1.0)  # the workers are at work
        children |= _descendants(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed = time.monotonic()
        while _alive(children) and time.monotonic() - killed < 5.0:
            time.sleep(0.05)
        return _alive(children), time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()


def test_workers_of_a_killed_extract_do_not_outlive_it(tmp_path: Path) -> None:
    rows = []
    for i in range(4):  # 4 files of 5 minutes: each worker is mid-file when the parent dies
        _write(tmp_path / f"long{i}.wav", np.tile(_speechlike(10.0, seed=i), 30), subtype="PCM_16")
        rows.append({"file": f"long{i}.wav", "speaker": "s", "split": "train", "arousal": 4, "valence": 4,
                     "dominance": 4})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    survivors, _ = _kill_and_watch([sys.executable, "-m", "serdistill", "extract", "m.csv", "-o", "f.parquet",
                                    "--workers", "2", "--no-cache", "-q"], 2, tmp_path)
    assert not survivors, f"worker(s) {survivors} outlived their killed parent by more than 5 s"
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)


def test_workers_of_a_killed_training_engine_do_not_outlive_it(tmp_path: Path) -> None:
    script = ("import time\nfrom serdistill.runtime.engine import LocalEngine\n"
              "LocalEngine(workers=2).map(time.sleep, [120, 120])\n")
    survivors, _ = _kill_and_watch([sys.executable, "-c", script], 2, tmp_path)
    assert not survivors, f"worker(s) {survivors} outlived their killed parent by more than 5 s"
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- 5. clear errors


@pytest.mark.parametrize("command", ["predict", "extract"])
def test_an_output_that_is_a_folder_is_a_one_line_error_before_any_work(
        command: str, bundle: Path, speech: Path, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    cache = tmp_path / "cache"
    if command == "predict":
        argv = ["predict", str(bundle), str(speech), "-o", str(folder), "--cache-dir", str(cache)]
    else:
        pd.DataFrame({"file": [str(speech)], "speaker": ["s"], "split": ["train"], "arousal": [4.0],
                      "valence": [4.0], "dominance": [4.0]}).to_csv(tmp_path / "m.csv", index=False)
        argv = ["extract", str(tmp_path / "m.csv"), "-o", str(folder), "--cache-dir", str(cache)]
    code, _, err = run_cli(argv)
    _one_line_error(code, err, f"{folder} is a folder")
    assert not cache.exists()  # nothing was extracted


def test_predict_and_serve_take_the_allow_truncated_flag_their_hint_names(bundle: Path, tmp_path: Path) -> None:
    full = _write(tmp_path / "full.wav", _speechlike(2.0), subtype="PCM_16").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full[: len(full) // 2])
    out = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(bundle), str(cut), "-o", str(out), "--no-cache", "-q"])
    assert code == 2 and "truncated" in err and "--allow-truncated" in err
    code, _, err = run_cli(["predict", str(bundle), str(cut), "-o", str(out), "--no-cache", "-q",
                            "--allow-truncated"])
    assert code == 0, err
    assert pd.read_csv(out)["duration"].iloc[0] == pytest.approx(1.0, abs=0.01)
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from serdistill.deploy.serve import create_app

    with TestClient(create_app(bundle, allow_truncated=True)) as client:
        response = client.post("/predict", files={"file": ("cut.wav", cut.read_bytes(), "audio/wav")})
    assert response.status_code == 200, response.text
    import contextlib

    text = io.StringIO()
    from serdistill.runtime.cli import main

    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--allow-truncated" in text.getvalue() and "--min-level" in text.getvalue()


def test_dangling_symlinks_and_loops_in_a_folder_are_reported(bundle: Path, speech: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(speech, folder / "ok.wav")
    (folder / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (folder / "loop_a.wav").symlink_to(folder / "loop_b.wav")
    (folder / "loop_b.wav").symlink_to(folder / "loop_a.wav")
    out = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(bundle), str(folder), "-o", str(out), "--no-cache", "-q"])
    assert code == 0, err
    assert [Path(f).name for f in pd.read_csv(out)["file"]] == ["ok.wav"]
    rejected = pd.read_csv(tmp_path / "p.csv.rejected.csv")
    assert sorted(Path(f).name for f in rejected["file"]) == ["dangling.wav", "loop_a.wav", "loop_b.wav"]
    assert set(rejected["kind"]) == {"unreadable"}
    assert "Rejected 3 of 4" in err


def test_a_manifest_path_through_a_symlink_is_kept_as_given(speech: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(speech, real / "a.wav")
    (tmp_path / "link").symlink_to(real)
    pd.DataFrame({"file": ["link/a.wav"], "speaker": ["s"], "split": ["train"], "arousal": [4.0],
                  "valence": [4.0], "dominance": [4.0]}).to_csv(tmp_path / "m.csv", index=False)
    code, _, err = run_cli(["extract", str(tmp_path / "m.csv"), "-o", str(tmp_path / "f.parquet"), "--no-cache",
                            "-q"])
    assert code == 0, err
    assert read_features(tmp_path / "f.parquet").index.tolist() == [str(tmp_path / "link" / "a.wav")]
    # a shell's working folder through a symlink ($PWD) is kept too
    env = {**os.environ, "PWD": str(tmp_path / "link")}
    result = subprocess.run([sys.executable, "-c", "from serdistill.base.io import absolute; print(absolute('a.wav'))"],
                            cwd=tmp_path / "link", env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(tmp_path / "link" / "a.wav")


# ---------------------------------------------------------------- 6. no speech, and the probe's bad audio


def _dither(seconds: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(0).integers(-1, 2, int(seconds * RATE)) / 32768).astype(np.float32)


def _wav_bytes(signal: np.ndarray, rate: int = RATE, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


#: name -> (file bytes, the rejection kind; None: accepted)
PROBE = {
    "dither.wav": (lambda: _wav_bytes(_dither()), "no_speech"),
    "dc.wav": (lambda: _wav_bytes(np.full(3 * RATE, 0.25, np.float32)), "no_speech"),
    "zeros.wav": (lambda: _wav_bytes(np.zeros(RATE, np.float32)), "silent"),
    "empty.wav": (lambda: b"", "unreadable"),
    "random.wav": (lambda: np.random.default_rng(3).bytes(4000), "unreadable"),
    "truncated.wav": (lambda: _wav_bytes(_speechlike(2.0))[:30000], "truncated"),
    "short.wav": (lambda: _wav_bytes(_speechlike(0.03)), "too_short"),
    "nan.wav": (lambda: _wav_bytes(np.full(RATE, np.nan, np.float32), subtype="FLOAT"), "nonfinite_samples"),
    "rate8k.wav": (lambda: _wav_bytes(_speechlike(1.0)[::2], rate=8000), None),
    "stereo44k.flac": (lambda: _wav_bytes(np.stack([_speechlike(1.0)] * 2, 1), rate=44100, fmt="FLAC"), None),
    "speech.ogg": (lambda: _wav_bytes(_speechlike(1.0), subtype="VORBIS", fmt="OGG"), None),
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    for name, (make, _) in PROBE.items():
        (folder / name).write_bytes(make())
    return folder


def test_predict_rejects_each_bad_file_with_its_kind_and_goes_on(bundle: Path, probe: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(bundle), str(probe), "-o", str(out), "--no-cache", "-q"])
    assert code == 0, err
    rejected = pd.read_csv(tmp_path / "p.csv.rejected.csv")
    got = {Path(f).name: kind for f, kind in zip(rejected["file"], rejected["kind"])}
    assert got == {name: kind for name, (_, kind) in PROBE.items() if kind is not None}
    predicted = pd.read_csv(out)
    assert sorted(Path(f).name for f in predicted["file"]) == sorted(n for n, (_, k) in PROBE.items() if k is None)
    assert np.isfinite(predicted.drop(columns="file").to_numpy()).all()


def test_the_service_rejects_each_bad_upload_with_its_kind(bundle: Path, probe: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from serdistill.deploy.serve import create_app

    with TestClient(create_app(bundle), raise_server_exceptions=False) as client:
        assert client.get("/health").json()["scale"] == [1.0, 7.0]
        for name, (_, kind) in PROBE.items():
            response = client.post("/predict", files={"file": (name, (probe / name).read_bytes(), "audio/wav")})
            if kind is None:
                assert response.status_code == 200, (name, response.text)
                answer = response.json()
                assert answer["scale"] == [1.0, 7.0] and answer["clipped"] is False
            else:
                kind = "empty" if name == "empty.wav" else kind  # the service refuses 0 bytes before reading
                expected = {"empty": 400, "unreadable": 415}.get(kind, 422)
                assert response.status_code == expected, (name, response.text)
                assert response.json()["kind"] == kind, name
        assert client.get("/health").status_code == 200


def test_the_level_is_cached_and_checked_again_on_a_hit(speech: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert len(FeatureExtractor(cache_dir=cache, verbose=False).process_files([speech])) == 1
    strict = FeatureExtractor(cache_dir=cache, verbose=False, min_level=-1.0)
    assert len(strict.process_files([speech])) == 0 and strict.stats.extracted == 0  # judged from the cache
    assert [r.kind for r in strict.rejected] == ["no_speech"] and "dBFS" in strict.rejected[0].reason
    relaxed = FeatureExtractor(cache_dir=cache, verbose=False, min_level=None)
    assert len(relaxed.process_files([speech])) == 1 and relaxed.stats.cached == 1


def test_min_level_off_lets_quiet_audio_through(bundle: Path, probe: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(bundle), str(probe / "dither.wav"), "-o", str(out), "--no-cache", "-q",
                            "--min-level", "off"])
    assert code == 0, err
