"""Monte-Carlo dropout: the fast path equals T ordinary full passes with the same masks."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from serdistill.method.mc_dropout import mc_dropout, mc_dropout_naive
from serdistill.method.models import MLP

pytestmark = pytest.mark.usefixtures("one_thread")

D = 24  # input features
N = 37  # segments: not a multiple of any block size below


def make_teacher(p: float, hidden=(16, 16, 16, 16), out_dim: int = 1, seed: int = 0) -> MLP:
    net = MLP(D, hidden, dropout=p, out_dim=out_dim, init="torch",
              generator=torch.Generator().manual_seed(seed))
    # a non-trivial label scaling, so the folded output scaling is exercised
    return net.set_output_scaling(torch.linspace(1.5, 2.5, out_dim), torch.linspace(4.0, 3.0, out_dim))


@pytest.fixture
def X(rng) -> np.ndarray:
    return rng.normal(size=(N, D)).astype(np.float32)


@pytest.mark.parametrize("p", [0.1, 0.45, 0.65])
@pytest.mark.parametrize("block_rows, max_rows", [
    (8, 20),        # 5 blocks (the last of 5 rows), 2 passes per stacked GEMM
    (8, 1),         # max_rows below block_rows: one pass at a time
    (16, 32768),    # 3 blocks, all 100 passes at once
    (8192, 100),    # one block (block_rows > n), 2 passes per GEMM
])
def test_equals_naive_with_same_masks(X, p, block_rows, max_rows):
    net = make_teacher(p)
    fast = mc_dropout(net, X, passes=100, seed=7, block_rows=block_rows, max_rows=max_rows,
                      return_masks=True, embedding_std=True)
    assert fast.masks is not None and len(fast.masks) == 4
    assert all(m.shape == (100, N, 16) and m.dtype == torch.bool for m in fast.masks)
    naive = mc_dropout_naive(net, X, fast.masks, embedding_std=True)
    np.testing.assert_allclose(fast.samples, naive.samples, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast.embedding, naive.embedding, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast.prediction, naive.prediction, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast.prediction_std, naive.prediction_std, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast.embedding_std, naive.embedding_std, atol=1e-4)
    # the passes really differ from each other (dropout was active)
    assert fast.prediction_std.min() > 0


@pytest.mark.parametrize("hidden", [(16,), (12, 8), (10, 20, 6)])
def test_equals_naive_other_depths(X, hidden):
    net = make_teacher(0.5, hidden=hidden, out_dim=2)
    fast = mc_dropout(net, X, passes=100, seed=1, block_rows=10, max_rows=35, return_masks=True)
    assert [m.shape[-1] for m in fast.masks] == list(hidden)
    naive = mc_dropout_naive(net, X, fast.masks)
    np.testing.assert_allclose(fast.samples, naive.samples, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast.embedding, naive.embedding, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_matches_written_out_forward(X):
    """Against the method written out by hand (not through MLP.forward), for 2 layers."""
    p = 0.4
    net = make_teacher(p, hidden=(6, 5))
    fast = mc_dropout(net, X, passes=20, seed=3, block_rows=16, return_masks=True, embedding_std=True)
    m1, m2 = (m.double() for m in fast.masks)
    W1, b1 = net.layers[0].weight.double(), net.layers[0].bias.double()
    W2, b2 = net.layers[1].weight.double(), net.layers[1].bias.double()
    Wo, bo = net.output.weight.double(), net.output.bias.double()
    x = torch.from_numpy(X).double()
    h1 = torch.relu(x @ W1.T + b1)  # the same for every pass
    h2 = torch.relu((h1 * m1 / (1 - p)) @ W2.T + b2)  # (T, n, 5)
    out = ((h2 * m2 / (1 - p)) @ Wo.T + bo) * net.output_scale.double() + net.output_shift.double()
    np.testing.assert_allclose(fast.embedding, h2.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(fast.embedding_std, h2.std(0, unbiased=False).numpy(), atol=1e-4)
    np.testing.assert_allclose(fast.samples, out.numpy(), atol=1e-5)
    np.testing.assert_allclose(fast.prediction, out.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(fast.prediction_std, out.std(0, unbiased=False).numpy(), atol=1e-5)


def test_independent_of_max_rows(X):
    net = make_teacher(0.55)
    runs = [mc_dropout(net, X, passes=30, seed=11, block_rows=8, max_rows=m, return_masks=True)
            for m in (1, 8, 24, 100, 32768)]
    for run in runs[1:]:
        for a, b in zip(run.masks, runs[0].masks):
            assert torch.equal(a, b)
        np.testing.assert_allclose(run.samples, runs[0].samples, atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(run.embedding, runs[0].embedding, atol=1e-6, rtol=1e-6)


def test_block_rows_is_part_of_the_stream(X):
    net = make_teacher(0.5)
    a = mc_dropout(net, X, passes=10, seed=0, block_rows=8, return_masks=True)
    b = mc_dropout(net, X, passes=10, seed=0, block_rows=16, return_masks=True)
    assert not torch.equal(a.masks[0], b.masks[0])


def test_seed_reproducible(X):
    net = make_teacher(0.5)
    a = mc_dropout(net, X, passes=50, seed=5, block_rows=8)
    b = mc_dropout(net, X, passes=50, seed=5, block_rows=8)
    c = mc_dropout(net, X, passes=50, seed=6, block_rows=8)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    assert not np.allclose(a.samples, c.samples)
    assert not np.allclose(a.embedding, c.embedding)
    # different seeds still agree on average: same model, same expectation
    assert np.abs(a.prediction - c.prediction).mean() < np.abs(a.samples[0] - c.samples[0]).mean()


def test_masks_vary_across_passes_rows_and_blocks(X):
    net = make_teacher(0.5)
    masks = mc_dropout(net, X, passes=4, seed=0, block_rows=8, return_masks=True).masks
    m = masks[0]
    assert not torch.equal(m[0], m[1])  # passes
    assert not torch.equal(m[:, 0], m[:, 1])  # rows of a block
    assert not torch.equal(m[:, 0], m[:, 8])  # first rows of two blocks
    assert not torch.equal(masks[0], masks[1])  # layers


@pytest.mark.parametrize("p", [0.05, 0.45, 0.5, 0.65, 0.9])
def test_realised_drop_rate(rng, p):
    net = MLP(8, (64, 64), dropout=p, generator=torch.Generator().manual_seed(0))
    X = rng.normal(size=(300, 8)).astype(np.float32)
    masks = mc_dropout(net, X, passes=100, seed=2, block_rows=128, return_masks=True).masks
    units = sum(m.numel() for m in masks)  # 3.84 M: binomial sd of the rate < 3e-4
    dropped = sum(int((~m).sum()) for m in masks) / units
    assert abs(dropped - p) < 2e-3
    for m in masks:  # and per layer, per pass position
        assert abs(float((~m).float().mean()) - p) < 3e-3


def test_shapes(X):
    net = make_teacher(0.5, hidden=(16, 16, 16, 12), out_dim=3)
    r = mc_dropout(net, X, passes=9, seed=0, embedding_std=True)
    assert r.embedding.shape == (N, 12) and r.embedding.dtype == np.float32
    assert r.embedding_std.shape == (N, 12)
    assert r.prediction.shape == (N, 3) and r.prediction_std.shape == (N, 3)
    assert r.samples.shape == (9, N, 3)
    assert r.masks is None
    assert (r.embedding_std >= 0).all() and r.embedding_std.max() > 0
    np.testing.assert_allclose(r.prediction, r.samples.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(r.prediction_std, r.samples.std(axis=0), atol=1e-6)
    assert mc_dropout(net, X, passes=9).embedding_std is None


@torch.no_grad()
def test_embedding_is_before_last_dropout(X):
    """The embedding is never zeroed by the last layer's mask: it is taken before it."""
    net = make_teacher(0.6, hidden=(16, 16))
    r = mc_dropout(net, X, passes=1, seed=0, return_masks=True)
    _, hidden = net.eval().forward_hidden(torch.from_numpy(X), masks=[m[0] for m in r.masks])
    np.testing.assert_allclose(r.embedding, hidden.numpy(), atol=1e-5)
    dropped_units = ~r.masks[1][0]
    assert (hidden[dropped_units] > 0).any()  # some positive units would have been zeroed after


@torch.no_grad()
def test_disabled_equals_eval_forward(X):
    net = make_teacher(0.5, out_dim=2)
    r = mc_dropout(net, X, passes=100, enabled=False, embedding_std=True, return_masks=True)
    out, hidden = net.eval().forward_hidden(torch.from_numpy(X))
    np.testing.assert_allclose(r.prediction, out.numpy(), atol=1e-6)
    np.testing.assert_allclose(r.embedding, hidden.numpy(), atol=1e-6)
    assert r.samples.shape == (1, N, 2)
    assert (r.prediction_std == 0).all() and (r.embedding_std == 0).all()
    assert all(m.all() for m in r.masks)
    # and differs from the MC mean
    mc = mc_dropout(net, X, passes=100)
    assert not np.allclose(mc.prediction, r.prediction, atol=1e-3)


def test_zero_dropout_is_deterministic(X):
    net = make_teacher(0.0)
    r = mc_dropout(net, X, passes=10)
    np.testing.assert_allclose(r.prediction, net.eval()(torch.from_numpy(X)).detach().numpy(), atol=1e-6)


def test_leaves_model_unchanged_and_in_eval(X):
    net = make_teacher(0.5).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    mc_dropout(net, X, passes=5)
    assert not net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_naive_without_masks(X):
    net = make_teacher(0.5)
    torch.manual_seed(0)
    r = mc_dropout_naive(net, X, passes=100)
    assert r.samples.shape == (100, N, 1)
    assert not net.training
    assert r.prediction_std.min() > 0
    # it estimates the same expectation as the fast path: the two MC means differ by about
    # sqrt(2)·std/sqrt(100), far less than one pass's spread
    fast = mc_dropout(net, X, passes=100, seed=0)
    assert np.abs(r.prediction - fast.prediction).mean() < 0.4 * fast.prediction_std.mean()
    with pytest.raises(ValueError, match="passes"):
        mc_dropout_naive(net, X)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux's /proc/self/smaps_rollup")
@pytest.mark.parametrize("enabled", [True, False])
def test_features_on_disk_leave_the_process_as_the_blocks_pass(enabled):
    """MC dropout, and its one deterministic pass ("no MC dropout"), over a 160 MiB matrix on
    disk keep at most ~one page budget (64 MiB) of it mapped, and give the same numbers."""
    from serdistill.data.storage import PAGE_BUDGET, disk_matrix, release_rows

    def mapped_mb() -> float:
        with open("/proc/self/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss_File")) / 1024

    X = disk_matrix((10240, 4096))
    for start in range(0, len(X), 1024):
        X[start:start + 1024] = np.random.default_rng(start).normal(size=(1024, 4096)).astype(np.float32)
    release_rows(X, 0, len(X))
    net = MLP(4096, (8, 8), dropout=0.5, generator=torch.Generator().manual_seed(0))
    before, peak, done = mapped_mb(), [0.0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], mapped_mb() - before)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        got = mc_dropout(net, X, passes=3, enabled=enabled, block_rows=2048)  # read in slices of 1,024 rows
    finally:
        done.set()
        thread.join()
    assert peak[0] < PAGE_BUDGET / 2**20 + 24, f"{peak[0]:.0f} MiB of the 160 MiB matrix mapped at once"
    expected = mc_dropout(net, np.array(X), passes=3, enabled=enabled, block_rows=2048)
    np.testing.assert_array_equal(got.embedding, expected.embedding)
    np.testing.assert_array_equal(got.samples, expected.samples)
