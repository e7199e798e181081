"""Training speed: one teacher epoch at the paper's size, in GFLOP/s against the machine's fp32 matmul peak.

A teacher (6373 -> 4 x 512 -> 1, dropout 0.5, SGD) is trained by ``fit_teacher`` for two
epochs on 34,280 random segments (the MSP-Podcast v1.6 training set's size) with the
batch size of ``configs/paper.toml`` (256), scoring a development set of 5,958 segments
after each epoch as the real loop does. The first epoch pays the warm-up; the target uses
the faster of the two.

FLOPs are counted exactly, multiply-adds x 2: per segment, the forward pass through the 5
linear layers, the weight gradients of all 5, and the input gradients of the last 4 (the
features need none), i.e. ~2.2x the forward pass (the ``3x forward`` rule of thumb would
inflate the rate by ~35%, so it is only shown beside), plus the development forward. The
peak is the best of three 4096 x 4096 x 4096 ``torch.mm`` in fp32, measured in the same run
with the same threads. Target: an epoch at >= 0.5x that peak.

A breakdown of one training step (means over 30 steps of the same loop body) shows where
time goes: the batch gather (``index_select``), forward with the dropout masks and loss,
backward, the SGD step, and the same step's GEMMs alone. With more than one thread, the
epoch is also run on one thread (information only, against the 1-thread peak): on cores
that other processes keep busy, every parallel region of a step waits for a descheduled
thread, and a loop of many short kernels slows down far more than one 4096^3 GEMM.
OpenMP threads that spin while they wait (libgomp's default) make this much worse; measured
here on 2 cores kept busy by 2 other processes, ``OMP_WAIT_POLICY=PASSIVE`` (set before
torch is imported) made an epoch ~7x faster. Run it both ways to see it:
``OMP_WAIT_POLICY=PASSIVE python -m benchmarks training``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

TARGET_PEAK = 0.5
ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--training-segments", type=int, default=34280, metavar="N",
                       help="training segments (default: 34,280, MSP-Podcast v1.6 train)")
    group.add_argument("--training-dev", type=int, default=5958, metavar="N",
                       help="development segments scored after each epoch (default: 5,958)")
    group.add_argument("--training-batch", type=int, default=0, metavar="B",
                       help="batch size (default: [train] batch_size of configs/paper.toml)")
    group.add_argument("--training-device", default="cpu", metavar="DEVICE",
                       help="where the teacher trains: cpu (default), cuda or cuda:N (the peak is then the GPU's "
                            "fp32 torch.mm; no per-step breakdown)")
    group.add_argument("--training-quick", action="store_true",
                       help="CI size: 4,096 training and 712 development segments")


def _flops_per_segment(widths: list[int]) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of one segment through linear layers ``widths``."""
    pairs = list(zip(widths[:-1], widths[1:]))
    forward = sum(2 * a * b for a, b in pairs)
    weight_grads = forward
    input_grads = sum(2 * a * b for a, b in pairs[1:])
    return forward, forward + weight_grads + input_grads


def _peak(torch, size: int = 4096, device: str = "cpu") -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.mm(a, b, out=out)  # warm-up
    sync()
    best = min(_time(lambda: (torch.mm(a, b, out=out), sync())) for _ in range(3))
    return 2 * size**3 / best / 1e9


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from benchmarks.bench_extract import free_cores
    from serdistill.method.config import load_config
    from serdistill.method.training import fit_teacher, resolve_device

    device = str(resolve_device(getattr(args, "training_device", "cpu")))
    paper = load_config(ROOT / "configs" / "paper.toml")
    quick = getattr(args, "training_quick", False)
    n = 4096 if quick else getattr(args, "training_segments", 34280)
    n_dev = 712 if quick else getattr(args, "training_dev", 5958)
    B = getattr(args, "training_batch", 0) or paper.train.batch_size
    d = 6373
    hidden = list(paper.teacher.hidden)
    widths = [d, *hidden, 1]
    free = free_cores()
    print(f"{n} training + {n_dev} development segments x {d} features, batch {B}, teacher {hidden}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, 2 busy processes get {free:.2f} cores, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; device {device}", flush=True)
    peak = _peak(torch, device=device)
    print(f"  fp32 matmul peak (4096^3 torch.mm, best of 3): {peak:.0f} GFLOP/s", flush=True)

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = (4.0 + rng.standard_normal(n)).astype(np.float32)
    X_dev = rng.standard_normal((n_dev, d), dtype=np.float32)
    y_dev = (4.0 + rng.standard_normal(n_dev)).astype(np.float32)

    forward, train_flops = _flops_per_segment(widths)
    epoch_flops = n * train_flops + n_dev * forward
    rule_of_thumb = n * 3 * forward + n_dev * forward
    config = paper.teacher.__class__(**{**paper.teacher.to_dict(), "epochs": 2})
    train = paper.train.__class__(**{**paper.train.to_dict(), "batch_size": B, "device": device})
    seconds: list[float] = []
    fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=config, train=train, seed=0,
                on_epoch=lambda info: (seconds.append(info["seconds"]),
                                       print(f"  epoch {info['epoch']}: {info['seconds']:.1f} s", flush=True)))
    rows = [{"run": f"fp32 matmul peak, 4096^3 torch.mm ({device})", "seconds": None, "gflop_s": peak, "x_peak": 1.0}]
    for i, s in enumerate(seconds):
        rows.append({"run": f"teacher epoch {i + 1}{' (warm-up)' if i == 0 else ''}, {n} + dev {n_dev}",
                     "seconds": s, "gflop": epoch_flops / 1e9, "gflop_s": epoch_flops / s / 1e9,
                     "x_peak": epoch_flops / s / 1e9 / peak,
                     "gflop_s_3x_rule": rule_of_thumb / s / 1e9})
    on_cpu = device == "cpu"
    rows += _breakdown(torch, X, y, B, hidden, peak) if on_cpu else []
    threads = torch.get_num_threads()
    if threads > 1 and on_cpu:  # the same epoch on one thread: shows what sharing busy cores costs
        torch.set_num_threads(1)
        try:
            peak1 = _peak(torch)
            one: list[float] = []
            fit_teacher(X, y, X_dev, y_dev, dropout=0.5, config=config.__class__(**{**config.to_dict(), "epochs": 1}),
                        train=train, seed=0, on_epoch=lambda info: one.append(info["seconds"]))
        finally:
            torch.set_num_threads(threads)
        print(f"  1 thread: peak {peak1:.0f} GFLOP/s, epoch {one[0]:.1f} s", flush=True)
        rows.append({"run": "fp32 matmul peak, 1 thread (info)", "seconds": None, "gflop_s": peak1, "x_peak": peak1 / peak})
        rows.append({"run": "teacher epoch, 1 thread (info)", "seconds": one[0], "gflop": epoch_flops / 1e9,
                     "gflop_s": epoch_flops / one[0] / 1e9, "x_peak": epoch_flops / one[0] / 1e9 / peak,
                     "x_peak_1_thread": epoch_flops / one[0] / 1e9 / peak1})
    best = min(seconds)
    rate = epoch_flops / best / 1e9
    rows.append({
        "run": "target: epoch vs matmul peak", "x_peak": rate / peak,
        "target": f"one teacher epoch >= {TARGET_PEAK:g}x the fp32 matmul peak (got {rate:.0f} of {peak:.0f} "
                  f"GFLOP/s = {rate / peak:.2f}x; exact fwd+bwd FLOPs; 2 busy processes got {free:.2f} cores)",
        "passed": rate / peak >= TARGET_PEAK,
    })
    return rows


def _breakdown(torch, X: np.ndarray, y: np.ndarray, B: int, hidden: list[int], peak: float,
               steps: int = 30) -> list[dict]:
    """Per-step times of the teacher loop's body, and of its GEMMs alone."""
    from serdistill.method.metrics import ccc_loss
    from serdistill.method.models import MLP, keep_mask

    d = X.shape[1]
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)[:, None]
    model = MLP(d, hidden, dropout=0.5, generator=torch.Generator().manual_seed(0)).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    buf = torch.empty((B + 1, d))
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(1))
    parts = {"index_select (batch gather)": 0.0, "forward + masks + loss": 0.0, "backward": 0.0,
             "optimizer step (SGD)": 0.0}
    names = list(parts)
    for step in range(steps + 3):  # 3 warm-up steps
        idx = order[(step * B) % (len(X) - B):][:B]
        t = [time.perf_counter()]
        xb = torch.index_select(X_t, 0, idx, out=buf[:B])
        t.append(time.perf_counter())
        loss = ccc_loss(model(xb, generator=gen), y_t[idx])
        t.append(time.perf_counter())
        opt.zero_grad()
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if step >= 3:
            for name, a, b in zip(names, t[:-1], t[1:]):
                parts[name] += (b - a) / steps

    # the same step's GEMMs alone: forward, weight gradients, input gradients (not layer 1)
    widths = [d, *hidden, 1]
    xs = [torch.randn(B, a) for a in widths[:-1]]
    ws = [torch.randn(b, a) for a, b in zip(widths[:-1], widths[1:])]
    gs = [torch.randn(B, b) for b in widths[1:]]

    def gemms():
        for i, (x, w, g) in enumerate(zip(xs, ws, gs)):
            torch.mm(x, w.t())
            torch.mm(g.t(), x)
            if i > 0:
                torch.mm(g, w)

    gemms()
    gemm_seconds = min(_time(gemms) for _ in range(steps // 3)) if steps >= 3 else _time(gemms)
    masks = min(_time(lambda: [keep_mask((B, h), 0.5, generator=gen) for h in hidden]) for _ in range(10))
    _, step_flops = _flops_per_segment(widths)
    step_flops *= B
    total = sum(parts.values())
    rows = [{"run": f"step: {name}", "ms_per_step": 1e3 * s, "share": s / total} for name, s in parts.items()]
    rows.append({"run": "step: total (one batch)", "ms_per_step": 1e3 * total, "share": 1.0,
                 "gflop_s": step_flops / total / 1e9, "x_peak": step_flops / total / 1e9 / peak})
    rows.append({"run": f"step: its GEMMs alone (batch {B})", "ms_per_step": 1e3 * gemm_seconds,
                 "share": gemm_seconds / total, "gflop_s": step_flops / gemm_seconds / 1e9,
                 "x_peak": step_flops / gemm_seconds / 1e9 / peak})
    rows.append({"run": "step: dropout masks alone (in forward)", "ms_per_step": 1e3 * masks, "share": masks / total})
    return rows
