"""Long recordings: `serdistill predict --segments` on an hour of real speech, time and memory.

Builds, with sox, one FLAC file of EmoDB utterances (the copy shipped with serdistill)
joined by 1 s of silence, about an hour long, and a 60 s file cut from its start; then runs
``serdistill predict --segments --workers 2`` on each in a fresh process and reads the
process tree's peak memory (the largest resident set of the command or of a worker).

Targets: the hour in at most 120 s on 2 cores (30x real time); memory streamed: the hour's
peak resident set at most 64 MiB above the minute's (the hour decoded to float32 would be
220 MiB), i.e. memory does not grow with the length of the file.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import Skip

TARGET_SECONDS = 120.0
TARGET_EXTRA_MIB = 64.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("segments")
    group.add_argument("--segments-minutes", type=float, default=60.0, metavar="M",
                       help="length of the long file in minutes (default: 60)")
    group.add_argument("--segments-dir", type=Path, metavar="DIR",
                       help="keep the built files and bundle here (default: a temporary folder)")


def build_long_file(out: Path, minutes: float, *, gap: float = 1.0) -> tuple[Path, float]:
    """EmoDB utterances joined by ``gap`` seconds of silence with sox, cycling through the
    corpus until ``minutes`` are reached; returns the file and its length in seconds."""
    from benchmarks.bench_accuracy import emodb_root

    if shutil.which("sox") is None:
        raise Skip("sox is not installed (apt-get install sox)")
    files = sorted((emodb_root() / "audio").glob("*.flac"))
    count = int(minutes * 60 / (2.0 + gap)) + 1
    work = out.parent / f".{out.stem}.parts"
    work.mkdir(parents=True, exist_ok=True)
    silence = work / "silence.flac"
    subprocess.run(["sox", "-n", "-r", "16000", "-b", "16", "-c", "1", str(silence), "trim", "0", str(gap)],
                   check=True)
    parts = []
    for k in range(0, count, 200):  # sox opens every input at once: a few hundred per call
        chunk = [files[i % len(files)] for i in range(k, min(count, k + 200))]
        args = [str(a) for f in chunk for a in (f, silence)]
        part = work / f"part{k // 200:03d}.flac"
        subprocess.run(["sox", *args, str(part)], check=True)
        parts.append(str(part))
    subprocess.run(["sox", *parts, str(out)], check=True)
    shutil.rmtree(work, ignore_errors=True)
    import soundfile as sf

    return out, float(sf.info(str(out)).duration)


def _tiny_bundle(folder: Path) -> Path:
    """A ComParE bundle trained in seconds on random features: the model's cost is not measured here."""
    from serdistill.deploy.bundle import save_bundle
    from serdistill.method.config import Config
    from serdistill.method.ensemble import TSModel
    from serdistill.data.features import FeatureSet, feature_names, feature_settings
    from serdistill.data.normalise import Normaliser

    fs = FeatureSet.ComParE_2016
    rng = np.random.default_rng(0)
    X_raw = rng.lognormal(sigma=2.0, size=(64, fs.dim)).astype(np.float32)
    y = np.clip(4 + np.log(X_raw[:, :3]) / 2, 1, 7).astype(np.float32)
    normaliser = Normaliser().fit(X_raw[:48])
    X = normaliser.transform(X_raw)
    config = Config.from_dict({"seed": 0, "train": {"batch_size": 16}, "baseline": {"enabled": False},
                               "teacher": {"hidden": [8, 8], "dropouts": [0.4, 0.5, 0.6], "epochs": 1},
                               "mc": {"passes": 3}, "student": {"hidden": [8], "epochs": 1, "alphas": [0.5],
                                                                "betas": [0.5]},
                               "unlabelled": {"source": "none"}, "reference": {"models": []}})
    model = TSModel(config).fit(X[:48], y[:48], X[48:], y[48:])
    features = {"feature_set": fs.value, "dim": fs.dim, "settings": feature_settings(fs), "names": feature_names(fs)}
    return save_bundle(folder / "tiny.bundle", model, normaliser, features)


def _predict(bundle: Path, audio: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MiB (the command or its largest worker) of one predict run."""
    code = ("import resource, sys\nfrom serdistill.runtime.cli import main\nrc = main(sys.argv[1:])\n"
            "peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "print('PEAK_KIB', peak, file=sys.stderr)\nsys.exit(rc)\n")
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "predict", str(bundle), str(audio), "-o", str(out),
                           "--segments", "--workers", "2", "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        raise RuntimeError(f"predict failed: {done.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_KIB"))
    return wall, peak / 1024


def run(args: argparse.Namespace) -> list[dict]:
    import pandas as pd

    minutes = getattr(args, "segments_minutes", 60.0)
    keep = getattr(args, "segments_dir", None)
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="serdistill-segments-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        long_file = folder / f"emodb-{minutes:g}min.flac"
        if long_file.exists():
            import soundfile as sf

            seconds = float(sf.info(str(long_file)).duration)
        else:
            print(f"building a {minutes:g}-minute file from EmoDB with sox ...", flush=True)
            long_file, seconds = build_long_file(long_file, minutes)
        minute = folder / "first-minute.flac"
        subprocess.run(["sox", str(long_file), str(minute), "trim", "0", "60"], check=True)
        bundle = folder / "tiny.bundle"
        if not (bundle / "bundle.json").exists():
            bundle = _tiny_bundle(folder)
        rows = []
        for name, audio, length in (("60 s", minute, 60.0), (f"{minutes:g} min", long_file, seconds)):
            out = folder / f"{audio.stem}.csv"
            wall, peak = _predict(bundle, audio, out)
            segments = len(pd.read_csv(out))
            rows.append({"run": name, "audio_s": round(length, 1), "seconds": round(wall, 1),
                         "x_realtime": round(length / wall, 1), "segments": segments,
                         "segments_per_s": round(segments / wall, 1), "peak_mib": round(peak)})
        reference, hour = rows
        extra = hour["peak_mib"] - reference["peak_mib"]
        scaled = TARGET_SECONDS * seconds / 3600
        rows.append({"run": "target: time", "seconds": hour["seconds"], "target":
                     f"{minutes:g} min of audio in <= {scaled:.0f} s on 2 cores (got {hour['seconds']:.0f} s, "
                     f"{hour['x_realtime']:.0f}x real time)", "passed": hour["seconds"] <= scaled})
        decoded = seconds * 16000 * 4 / 2**20
        rows.append({"run": "target: memory", "peak_mib": extra, "target":
                     f"peak memory grows <= {TARGET_EXTRA_MIB:.0f} MiB from 60 s to {minutes:g} min (got {extra:+.0f} "
                     f"MiB; the file decoded would take {decoded:.0f} MiB)", "passed": extra <= TARGET_EXTRA_MIB})
        print(f"{os.cpu_count()} CPUs; files in {folder}", flush=True)
        return rows
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
