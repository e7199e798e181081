"""Inference speed: the teachers' MC dropout against 100 naive full passes, and the student ensemble.

Part 1, Monte-Carlo dropout at the paper's size: 5 teachers (4 x 512, dropout 0.45..0.65)
x 100 passes x 10,124 segments (the MSP-Podcast v1.6 test set) x 6,373 features, random
weights and features (speed does not depend on the values). Runs, in one process:

1. ``serdistill.method.mc_dropout.mc_dropout`` on the full size (every teacher, every pass);
2. the naive reference, ``mc_dropout_naive``: ``model.train()`` and one ordinary forward
   per pass through every layer with ``F.dropout`` (the obvious implementation). It costs
   about 5x more, so by default it is timed on 1 teacher x 10 passes x all segments and
   multiplied by (teachers x passes) / 10: each pass is one independent full forward of
   the same size, so its cost is linear in passes and teachers (the table says so);
3. a check that the two agree: the fast path with ``return_masks=True`` against the naive
   one with those masks, on 256 segments x 100 passes (max abs difference).

Target: the fast path at least 5x faster than the naive one.

Part 2, the student ensemble (5 students, 6373 -> 2 x 512 -> 1) at inference:
``StudentEnsemble.predict`` latency for one segment (median of 200 calls; TSModel.predict
makes one such call per attribute) and its throughput on 10,000 segments, against the
obvious loop over the 5 students. No target: reported numbers.

On a machine whose cores are busy with other work every number here drops (two torch
threads that share their cores with other processes can be several times slower): the
benchmark reports the load and how many cores two busy processes get, and the OpenMP wait
policy (``OMP_WAIT_POLICY=PASSIVE`` helps on busy cores; see ``bench_training.py``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

TARGET_SPEEDUP = 5.0
DROPOUTS = (0.45, 0.50, 0.55, 0.60, 0.65)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mc_dropout")
    group.add_argument("--mc-dropout-segments", type=int, default=10124, metavar="N",
                       help="segments (default: 10,124, the MSP-Podcast test set)")
    group.add_argument("--mc-dropout-teachers", type=int, default=5, metavar="N", help="teachers (default: 5)")
    group.add_argument("--mc-dropout-passes", type=int, default=100, metavar="T", help="MC passes (default: 100)")
    group.add_argument("--mc-dropout-naive-passes", type=int, default=10, metavar="T",
                       help="passes of 1 teacher the naive path is timed on, scaled linearly (default: 10; "
                            "0 = time it on the full size)")
    group.add_argument("--mc-dropout-device", default="cpu", metavar="DEVICE",
                       help="where the teachers and students run: cpu (default), cuda or cuda:N")
    group.add_argument("--mc-dropout-quick", action="store_true",
                       help="CI size: 1,000 segments, 1 teacher, 100 passes (naive: 10 passes), 2,000 student segments")


def _sizes(args: argparse.Namespace) -> tuple[int, int, int, int, int]:
    if getattr(args, "mc_dropout_quick", False):
        return 1000, 1, 100, 10, 2000
    n = getattr(args, "mc_dropout_segments", 10124)
    teachers = getattr(args, "mc_dropout_teachers", 5)
    passes = getattr(args, "mc_dropout_passes", 100)
    naive = getattr(args, "mc_dropout_naive_passes", 10)
    return n, teachers, passes, naive, 10000


def _timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from benchmarks.bench_extract import free_cores
    from serdistill.method.mc_dropout import mc_dropout, mc_dropout_naive
    from serdistill.method.models import MLP

    from serdistill.method.training import resolve_device

    n, n_teachers, passes, naive_passes, n_students_rows = _sizes(args)
    device = resolve_device(getattr(args, "mc_dropout_device", "cpu"))
    d, H = 6373, 512
    free = free_cores()
    print(f"{n} segments x {d} features, {n_teachers} teacher(s) x {passes} passes; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"2 busy processes get {free:.2f} cores, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    teachers = [MLP(d, (H,) * 4, dropout=DROPOUTS[i % len(DROPOUTS)],
                    generator=torch.Generator().manual_seed(i)).eval().to(device) for i in range(n_teachers)]

    # warm-up: kernels, thread pools, first-touch of buffers
    mc_dropout(teachers[0], X[:256], passes=4, seed=0)
    mc_dropout_naive(teachers[0], X[:256], passes=2)

    # exactness on a slice: same masks, same results
    check = mc_dropout(teachers[0], X[:256], passes=100, seed=1, return_masks=True, embedding_std=True)
    reference = mc_dropout_naive(teachers[0], X[:256], check.masks, embedding_std=True)
    max_diff = max(float(np.abs(a - b).max()) for a, b in (
        (check.samples, reference.samples), (check.embedding, reference.embedding),
        (check.prediction_std, reference.prediction_std)))
    del check, reference

    # 1. the fast path, full size
    t_fast = 0.0
    for i, teacher in enumerate(teachers):
        _, seconds = _timed(lambda: mc_dropout(teacher, X, passes=passes, seed=i))
        t_fast += seconds
        print(f"  mc_dropout teacher {i + 1}/{n_teachers}: {seconds:.1f} s", flush=True)

    # 2. the naive path, on naive_passes of one teacher, scaled linearly
    timed_passes = passes if naive_passes <= 0 else min(naive_passes, passes)
    timed_teachers = n_teachers if naive_passes <= 0 else 1
    t_naive_timed = 0.0
    for teacher in teachers[:timed_teachers]:
        torch.manual_seed(0)
        _, seconds = _timed(lambda: mc_dropout_naive(teacher, X, passes=timed_passes))
        t_naive_timed += seconds
    factor = (n_teachers * passes) / (timed_teachers * timed_passes)
    t_naive = t_naive_timed * factor
    print(f"  naive: {timed_teachers} teacher(s) x {timed_passes} passes x {n} segments in {t_naive_timed:.1f} s; "
          f"x {factor:g} = {t_naive:.0f} s for {n_teachers} x {passes}", flush=True)

    # FLOPs of the two (multiply-adds x 2): the naive one repeats the 6373 x 512 layer every pass
    first, rest = 2 * n * d * H, 2 * n * (3 * H * H + H)
    flops_fast = n_teachers * (first + passes * rest)
    flops_naive = n_teachers * passes * (first + rest)
    size = f"{n_teachers} x {passes} x {n}"
    rows = [
        {"run": f"mc_dropout, {size}", "seconds": t_fast, "gflop_s": flops_fast / t_fast / 1e9,
         "segment_passes_per_s": n_teachers * passes * n / t_fast, "x_naive": t_naive / t_fast,
         "timed_on": "full size"},
        {"run": f"naive (F.dropout), {size}", "seconds": t_naive, "gflop_s": flops_naive / t_naive / 1e9,
         "segment_passes_per_s": n_teachers * passes * n / t_naive, "x_naive": 1.0,
         "timed_on": (f"{timed_teachers} x {timed_passes} x {n} in {t_naive_timed:.1f} s, scaled x{factor:g}"
                      if factor != 1 else "full size")},
        {"run": "max |fast - naive|, same masks", "seconds": None, "max_abs_diff": max_diff,
         "timed_on": "256 segments x 100 passes"},
    ]
    rows += _students(n_students_rows, d, H, device)
    rows.append({
        "run": "target: mc_dropout vs naive", "x_naive": t_naive / t_fast,
        "target": f"mc_dropout >= {TARGET_SPEEDUP:g}x naive passes at {size} x {d} (got {t_naive / t_fast:.1f}x; "
                  f"naive timed on {timed_teachers} x {timed_passes} passes and scaled x{factor:g}; "
                  f"2 busy processes got {free:.2f} cores)",
        "passed": t_naive / t_fast >= TARGET_SPEEDUP,
    })
    rows.append({"run": "fast equals naive (same masks)", "max_abs_diff": max_diff,
                 "target": f"max abs difference <= 1e-4 (got {max_diff:.1e})", "passed": max_diff <= 1e-4})
    return rows


def _students(n: int, d: int, H: int, device=None) -> list[dict]:
    """Student-ensemble latency (1 segment) and throughput (n segments) against a plain loop."""
    import torch

    from serdistill.method.config import Config
    from serdistill.method.ensemble import StudentEnsemble
    from serdistill.method.models import MLP

    N = len(DROPOUTS)
    students = StudentEnsemble(Config())
    # as TSModel.from_state_dict rebuilds a fitted ensemble
    students.models_ = [MLP(d, (H, H), generator=torch.Generator().manual_seed(100 + i)).eval().to(device)
                        for i in range(N)]
    students.n_features_in_, students.n_outputs_ = d, 1
    X = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
    one = X[:1]

    @torch.no_grad()
    def loop(x: np.ndarray) -> np.ndarray:
        x_t = torch.from_numpy(x).to(device)
        outs = torch.stack([m(x_t) for m in students.models_]).cpu().numpy()
        return outs.mean(axis=0)

    np.testing.assert_allclose(students.predict(X[:64]), loop(X[:64])[:, 0], atol=1e-4)
    rows = []
    for name, predict in (("StudentEnsemble.predict", students.predict), ("loop over 5 students", loop)):
        for _ in range(10):
            predict(one)
        latencies = []
        for _ in range(200):
            _, seconds = _timed(lambda: predict(one))
            latencies.append(seconds)
        best = min(_timed(lambda: predict(X))[1] for _ in range(3))
        rows.append({"run": f"students: {name}", "latency_ms": 1e3 * statistics.median(latencies),
                     "latency_p90_ms": 1e3 * float(np.percentile(latencies, 90)),
                     "segments_per_s": n / best, "seconds": best,
                     "timed_on": f"1 segment x 200 calls (median); {n} segments (best of 3)"})
    return rows
