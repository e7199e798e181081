"""The HTTP service: health, real-audio predictions equal to Bundle.predict_files, 4xx for bad input."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("onnxruntime")
sf = pytest.importorskip("soundfile")

from fastapi.testclient import TestClient  # noqa: E402

from toy import compare_bundle  # noqa: E402

from serdistill.deploy.bundle import load_bundle  # noqa: E402

pytestmark = pytest.mark.slow

MAX_BYTES = 1_000_000
MAX_SECONDS = 4.0
@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> Path:
    return compare_bundle(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(bundle_path: Path):
    from serdistill.deploy.serve import create_app

    app = create_app(bundle_path, max_upload_bytes=MAX_BYTES, max_seconds=MAX_SECONDS)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _wav(signal: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _speechlike(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(1)
    return (0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def _post(client, data: bytes, name: str = "x.wav", content_type: str = "audio/wav"):
    return client.post("/predict", files={"file": (name, data, content_type)})


def _still_serving(client) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_health_describes_the_service(client, bundle_path: Path) -> None:
    answer = client.get("/health").json()
    assert answer["status"] == "ok"
    assert answer["bundle"] == str(bundle_path)
    assert answer["attributes"] == ["arousal", "valence", "dominance"]
    assert answer["feature_set"] == "ComParE_2016" and answer["dim"] == 6373
    assert answer["backend"] == "onnxruntime"
    assert answer["max_upload_bytes"] == MAX_BYTES and answer["max_seconds"] == MAX_SECONDS


def test_a_real_recording_gets_the_bundles_prediction(client, bundle_path: Path, emodb_files) -> None:
    file = next(f for f in emodb_files if sf.info(str(f)).duration < MAX_SECONDS)
    response = _post(client, file.read_bytes(), file.name, "audio/flac")
    assert response.status_code == 200, response.text
    answer = response.json()
    keys = ["arousal", "valence", "dominance", "arousal_std", "valence_std", "dominance_std", "duration"]
    assert set(keys) <= set(answer) and answer["file"] == file.name
    assert all(math.isfinite(answer[k]) for k in keys)
    table, rejected = load_bundle(bundle_path).predict_files([file])
    assert not rejected
    for key in keys:
        assert answer[key] == pytest.approx(float(table[key].iloc[0]), abs=1e-4), key


def test_a_generated_wav_is_predicted_with_the_torch_backend_too(bundle_path: Path) -> None:
    from serdistill.deploy.serve import create_app

    data = _wav(_speechlike(1.5))
    answers = []
    for backend in ("onnx", "torch"):
        with TestClient(create_app(bundle_path, max_upload_bytes=MAX_BYTES, max_seconds=MAX_SECONDS,
                                   backend=backend)) as test_client:
            assert test_client.get("/health").json()["backend"] == ("onnxruntime" if backend == "onnx" else "torch")
            response = _post(test_client, data, "tone.wav")
            assert response.status_code == 200, response.text
            answers.append(response.json())
    assert answers[0]["duration"] == pytest.approx(1.5)
    for key in ("arousal", "valence", "dominance", "arousal_std", "valence_std", "dominance_std"):
        assert answers[0][key] == pytest.approx(answers[1][key], abs=1e-4)


def _truncated() -> bytes:
    data = _wav(_speechlike(1.0))
    return data[: len(data) // 2]


BAD = {
    "random bytes": (lambda: np.random.default_rng(0).bytes(5000), "noise.wav", "audio/wav", 415, "unreadable"),
    "truncated wav": (_truncated, "cut.wav", "audio/wav", 422, "truncated"),
    "10 ms of audio": (lambda: _wav(_speechlike(0.01)), "short.wav", "audio/wav", 422, "too_short"),
    "silence": (lambda: _wav(np.zeros(16000, np.float32)), "silence.wav", "audio/wav", 422, "silent"),
    "wrong content type": (lambda: b"hello, this is text", "notes.txt", "text/plain", 415, "unsupported_type"),
    "empty upload": (lambda: b"", "empty.wav", "audio/wav", 400, "empty"),
    "over the size limit": (lambda: _wav(np.zeros(MAX_BYTES // 2 + 10, np.float32) + 0.1), "big.wav", "audio/wav",
                            413, "too_large"),
    "too long": (lambda: _wav(_speechlike(MAX_SECONDS + 1)), "long.wav", "audio/wav", 422, "too_long"),
    "an image": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(100), "x.png", "image/png", 415, "unsupported_type"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_clear_4xx_and_the_service_goes_on(client, case: str) -> None:
    make, name, content_type, status, kind = BAD[case]
    response = _post(client, make(), name, content_type)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["kind"] == kind
    assert len(answer["detail"]) > 20 and "serdistill-upload" not in answer["detail"]
    if kind not in ("empty", "too_large", "unsupported_type"):
        assert name in answer["detail"]
    _still_serving(client)


def test_requests_without_a_multipart_file_are_4xx(client) -> None:
    response = client.post("/predict", json={"file": "a.wav"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]
    response = client.post("/predict", files={"audio": ("a.wav", _wav(_speechlike(1.0)), "audio/wav")})
    assert response.status_code == 400 and "'file'" in response.json()["detail"]
    response = client.post("/predict", content=b"x" * (MAX_BYTES + 100_000),
                           headers={"content-type": "multipart/form-data; boundary=zz"})
    assert response.status_code == 413
    _still_serving(client)


def test_the_page_offers_an_upload_form(client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<form id="upload-form"' in page and 'type="file"' in page and 'name="file"' in page
    assert 'fetch("predict?segments=auto"' in page and 'id="timeline"' in page and 'id="player"' in page
    for attribute in ("arousal", "valence", "dominance"):
        assert f'id="{attribute}-value"' in page and f'id="{attribute}-std"' in page


def test_a_bad_bundle_path_stops_at_start(tmp_path: Path) -> None:
    from serdistill.base.errors import BundleError
    from serdistill.deploy.serve import create_app

    with pytest.raises(BundleError, match="does not exist"):
        create_app(tmp_path / "missing.bundle")


@pytest.mark.parametrize("fmt, subtype, suffix, content_type", [
    ("FLAC", "PCM_16", ".flac", "audio/flac"),
    ("OGG", "VORBIS", ".ogg", "audio/ogg"),
    ("MP3", "MPEG_LAYER_III", ".mp3", "audio/mpeg"),
    ("WAV", "FLOAT", ".wav", "application/octet-stream"),
])
def test_every_supported_format_is_predicted(client, bundle_path: Path, tmp_path: Path, fmt: str, subtype: str,
                                             suffix: str, content_type: str) -> None:
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt} {subtype}")
    file = tmp_path / f"clip{suffix}"
    sf.write(str(file), _speechlike(1.2, 22050), 22050, format=fmt, subtype=subtype)
    response = _post(client, file.read_bytes(), file.name, content_type)
    assert response.status_code == 200, response.text
    table, _ = load_bundle(bundle_path).predict_files([file])
    for key in ("arousal", "valence_std", "duration"):
        assert response.json()[key] == pytest.approx(float(table[key].iloc[0]), abs=1e-4)


def test_a_running_server_answers_concurrent_requests_alike(bundle_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from server import serving

    with serving(bundle_path) as url:
        clips = [_wav(_speechlike(1.0 + 0.25 * i)) for i in range(4)]
        with httpx.Client(base_url=url, timeout=60) as http:
            alone = [http.post("/predict", files={"file": ("c.wav", c, "audio/wav")}).json() for c in clips]
            with ThreadPoolExecutor(4) as pool:
                together = list(pool.map(lambda c: http.post("/predict", files={"file": ("c.wav", c, "audio/wav")}),
                                         clips * 2))
    assert all(r.status_code == 200 for r in together)
    assert [r.json() for r in together] == alone * 2


def test_without_onnxruntime_the_service_runs_the_model_with_torch(bundle_path: Path, monkeypatch) -> None:
    from serdistill.deploy import serve
    from serdistill.deploy.export import MissingDependency

    def no_onnx(*modules):
        if "onnxruntime" in modules:
            raise MissingDependency("onnxruntime is not installed")

    monkeypatch.setattr(serve, "require", no_onnx)
    with TestClient(serve.create_app(bundle_path)) as test_client:
        assert test_client.get("/health").json()["backend"] == "torch"
        assert _post(test_client, _wav(_speechlike(1.0)), "a.wav").status_code == 200


def _joined(files: list[Path], seconds: float) -> bytes:
    """Real utterances (EmoDB) separated by 1.5 s of near-silence, for ``seconds``: the VAD needs speech
    (it rightly finds none in a synthetic tone)."""
    rate, parts, total = 16000, [], 0
    rng = np.random.default_rng(7)
    for file in files[::11]:
        if total >= seconds * rate:
            break
        burst = sf.read(file, dtype="float32")[0]
        gap = (rng.normal(size=int(1.5 * rate)) * 1e-4).astype(np.float32)
        parts += [burst, gap]
        total += len(burst) + len(gap)
    return _wav(np.concatenate(parts))


def test_a_long_upload_gets_a_segment_list(client, emodb_files) -> None:
    data = _joined(emodb_files, 20.0)  # longer than the client's max_seconds (4 s) in one piece
    response = _post(client, data, "long.wav")
    assert response.status_code == 422 and "segments=true" in response.json()["detail"]
    response = client.post("/predict?segments=true", files={"file": ("long.wav", data, "audio/wav")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["duration"] == pytest.approx(21.0, abs=0.1) and answer["clipped"] is False  # 6 x (2 + 1.5) s
    segments = answer["segments"]
    assert len(segments) >= 5
    for segment in segments:
        assert 1.0 - 1e-6 <= segment["end"] - segment["start"] <= 10.0 + 1e-6
        assert all(math.isfinite(segment[k]) for k in ("arousal", "valence_std", "dominance"))
    auto = client.post("/predict?segments=auto", files={"file": ("long.wav", data, "audio/wav")}).json()
    assert auto["segments"] == segments  # 21 s: under segment_over (30 s), but over max_seconds (4 s)
    response = client.post("/predict?segments=maybe", files={"file": ("long.wav", data, "audio/wav")})
    assert response.status_code == 400 and response.json()["kind"] == "bad_request"


def test_health_says_what_the_model_was_trained_on(client) -> None:
    answer = client.get("/health").json()
    assert set(answer["development_ccc"]) == {"arousal", "valence", "dominance"}
    assert answer["max_long_seconds"] == 3600.0 and answer["segment_over"] == 30.0
