"""HTTP service latency: POST /predict of a 5 s clip with 1 and 4 concurrent clients (p50/p99, errors).

Trains a tiny bundle on random ComParE_2016 features (6,373 values, seconds), starts
``serdistill serve`` on it in a subprocess on a free loopback port, and sends N requests
(``--serve-requests``) of one 5 s generated clip per concurrency level
(``--serve-clients``, default 1 and 4). Latency is measured by each client from sending to
the full answer; its p50 and p99 per level, and the throughput. Target: no error (every
answer 200 with the same prediction as the first). Most of a request is openSMILE's
feature extraction; the model (onnxruntime) takes well under a millisecond.
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import Skip

CLIP_SECONDS = 5.0
TINY = {
    "seed": 0, "train": {"batch_size": 16},
    "baseline": {"enabled": False, "hidden": [8], "epochs": 1},
    "teacher": {"hidden": [8, 8], "dropouts": [0.4, 0.5, 0.6, 0.65, 0.7], "epochs": 2},
    "mc": {"passes": 3},
    "student": {"hidden": [8], "epochs": 2, "alphas": [0.5], "betas": [0.5]},
    "unlabelled": {"source": "none"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serve")
    group.add_argument("--serve-requests", type=int, default=20, metavar="N",
                       help="requests per concurrency level (default: 20)")
    group.add_argument("--serve-clients", default="1,4", metavar="LIST",
                       help="concurrent clients, comma-separated (default: 1,4)")
    group.add_argument("--serve-bundle", type=Path, metavar="BUNDLE",
                       help="serve this bundle instead of a tiny one trained on random features")


def _tiny_bundle(folder: Path) -> Path:
    from serdistill.deploy.bundle import save_bundle
    from serdistill.method.config import Config
    from serdistill.method.ensemble import TSModel
    from serdistill.data.features import FeatureSet, feature_names, feature_settings
    from serdistill.data.normalise import Normaliser

    fs = FeatureSet.ComParE_2016
    rng = np.random.default_rng(0)
    X_raw = rng.lognormal(sigma=2.0, size=(64, fs.dim)).astype(np.float32)
    y = (4 + np.log(X_raw[:, :3]) / 2).astype(np.float32)
    normaliser = Normaliser().fit(X_raw[:48])
    X = normaliser.transform(X_raw)
    model = TSModel(Config.from_dict(TINY)).fit(X[:48], y[:48], X[48:], y[48:])
    features = {"feature_set": fs.value, "dim": fs.dim, "settings": feature_settings(fs), "names": feature_names(fs)}
    return save_bundle(folder / "bench.bundle", model, normaliser, features)


def _clip(seconds: float = CLIP_SECONDS, rate: int = 16000) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voice = np.sin(2 * np.pi * np.cumsum(pitch) / rate) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    signal = 0.3 * voice + 0.01 * np.random.default_rng(0).normal(size=t.size)
    buffer = io.BytesIO()
    sf.write(buffer, signal.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(client, url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serdistill serve exited with {server.returncode}")
        try:
            if client.get(url + "/health", timeout=2).status_code == 200:
                return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"serdistill serve did not answer /health within {timeout:.0f} s")


def run(args: argparse.Namespace) -> list[dict]:
    try:
        import httpx

        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise Skip(f"{err.name} is not installed: pip install 'serdistill[serve]' httpx") from None
    requests = max(1, int(getattr(args, "serve_requests", 20)))
    levels = [int(c) for c in str(getattr(args, "serve_clients", "1,4")).split(",") if c.strip()]
    clip = _clip()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        bundle = getattr(args, "serve_bundle", None) or _tiny_bundle(Path(tmp))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "server.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "serdistill", "serve", str(bundle), "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            with httpx.Client(timeout=120) as client:
                _wait(client, url, server)
                backend = client.get(url + "/health").json()["backend"]
                first = client.post(url + "/predict", files={"file": ("clip.wav", clip, "audio/wav")})
                if first.status_code != 200:
                    raise RuntimeError(f"the warm-up request failed: {first.status_code} {first.text}")
                reference = first.json()

                def one(_: int) -> tuple[float, bool]:
                    tic = time.perf_counter()
                    try:
                        r = client.post(url + "/predict", files={"file": ("clip.wav", clip, "audio/wav")})
                        ok = r.status_code == 200 and r.json() == reference
                    except Exception:
                        ok = False
                    return time.perf_counter() - tic, ok

                for clients in levels:
                    tic = time.perf_counter()
                    with ThreadPoolExecutor(clients) as pool:
                        results = list(pool.map(one, range(requests)))
                    wall = time.perf_counter() - tic
                    latency = np.array([r[0] for r in results]) * 1000
                    errors = sum(not r[1] for r in results)
                    rows.append({"clients": clients, "requests": requests, "clip_s": CLIP_SECONDS, "backend": backend,
                                 "p50_ms": float(np.percentile(latency, 50)),
                                 "p99_ms": float(np.percentile(latency, 99)),
                                 "req_per_s": requests / wall, "errors": errors, "passed": errors == 0,
                                 "target": "no errors (200, same prediction)"})
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    return rows
