"""Monte-Carlo dropout for a teacher: exact, and several times faster than T full passes.

No dropout touches the input features, so ``h1 = relu(X·W1 + b1)`` is the same in all T
passes: it is computed once per block of segments. The remaining layers (512 x 512) run for
all passes at once by stacking G passes along the batch dimension, so every GEMM is large.
The mask scale ``1/(1 − p)`` is folded into the next layer's weights, and masks are made
from 16 random bits per unit (see :func:`serdistill.method.models.keep_mask`):

- random words: ``int64.random_()`` over the full range, viewed as four int16 values
  (CPU, measured here: ~3 GB/s; ``F.dropout``'s float Bernoulli gives ~75 M units/s, and
  ``torch.rand`` ~250 M/s);
- keep = ``clamp(v − (threshold − 1), 0, 1)`` in float32 after a plain int16 → float32
  copy (mixed-dtype ops such as ``float.mul_(bool)`` or ``ge(out=float)`` are 5-20x slower).

Masks are reproducible: block k of ``block_rows`` segments draws from its own generator
seeded with ``derive_seed(seed, k)``, pass after pass, each pass drawing all its layers'
bits in one call. So results depend on the seed and ``block_rows`` only, not on how many
passes run together. ``return_masks=True`` returns the masks used, and
:func:`mc_dropout_naive` with those masks runs T ordinary full passes: the two agree to
float32 rounding (``tests/unit/test_mc_dropout.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from serdistill.data.feature_rows import FeatureRows
from serdistill.method.models import MLP, drop_threshold
from serdistill.method.torch_state import derive_seed, make_generator, resolve_device

#: Rows (passes x segments) per stacked GEMM: bounds memory to ~4 buffers of this x 512 floats.
#: 8,192 (one default block, one pass at a time on large inputs) runs as fast as 32,768 here
#: (16,384 x 6,373, 4 x 512, 30 passes: 6.4-6.8 s either way) with a quarter of the buffers.
MAX_ROWS = 8192


@dataclass
class MCResult:
    """Monte-Carlo dropout outputs for n segments.

    Attributes:
        embedding: mean over passes of the last hidden layer (after ReLU, before its dropout), (n, H).
        prediction: mean over passes of the output, (n, k).
        prediction_std: standard deviation over passes of the output (population), (n, k).
        samples: every pass's output, (T, n, k).
        embedding_std: std over passes of the last hidden layer, (n, H), when asked for.
        masks: per hidden layer, the keep-masks used, (T, n, H_l) bool, when asked for.
    """

    embedding: np.ndarray
    prediction: np.ndarray
    prediction_std: np.ndarray
    samples: np.ndarray
    embedding_std: np.ndarray | None = None
    masks: list[torch.Tensor] | None = None


@torch.no_grad()
def mc_dropout(
    model: MLP,
    X: np.ndarray | torch.Tensor,
    *,
    passes: int = 100,
    seed: int = 0,
    enabled: bool = True,
    block_rows: int = 8192,
    embedding_std: bool = False,
    return_masks: bool = False,
    device: str | torch.device | None = None,
    max_rows: int = MAX_ROWS,
) -> MCResult:
    """Run ``model`` ``passes`` times with dropout active, computing the first layer once.

    Args:
        model: a trained teacher (:class:`~serdistill.method.models.MLP` with dropout).
        X: features, (n, d) float32.
        passes: T, the number of stochastic passes.
        seed: the mask stream's seed.
        enabled: False = one deterministic pass with dropout off (the "no MC dropout" ablation).
        block_rows: segments per mask block (part of the mask stream's definition).
        embedding_std: also return the std of the embedding over passes (one more pass over memory).
        return_masks: also return the masks (T·n·ΣH booleans: for tests and small inputs).
        device: where to compute (default: the model's device).
        max_rows: passes x segments per stacked GEMM (memory bound, does not change results).

    Examples:
        >>> net = MLP(20, hidden=(16, 16), dropout=0.5, generator=torch.Generator().manual_seed(0))
        >>> result = mc_dropout(net, np.ones((4, 20), np.float32), passes=10)
        >>> result.embedding.shape, result.prediction.shape, result.samples.shape
        ((4, 16), (4, 1), (10, 4, 1))
    """
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    rows = FeatureRows(X)  # on disk: its pages leave the process as the blocks pass
    n = len(rows)
    model = model.eval()
    if not enabled or model.dropout == 0.0:
        return _deterministic(
            model, rows, device=device, block_rows=block_rows, embedding_std=embedding_std, return_masks=return_masks
        )
    widths = model.hidden
    L, H_last, k = len(widths), widths[-1], model.out_dim
    scale = 1.0 / (1.0 - model.dropout)
    threshold = drop_threshold(model.dropout)
    dtype = torch.float32
    weights = [layer.weight.detach().to(device, dtype) for layer in model.linears]
    biases = [layer.bias.detach().to(device, dtype) for layer in model.linears]
    w_first = weights[0].t()
    w_rest = [(w.t() * scale).contiguous() for w in weights[1:]]
    # the output layer with the dropout scale and the label scaling folded in
    out_scale = model.output_scale.detach().to(device, dtype)
    w_out = (model.output.weight.detach().to(device, dtype).t() * (scale * out_scale)).contiguous()
    b_out = model.output.bias.detach().to(device, dtype) * out_scale + model.output_shift.detach().to(device, dtype)

    offsets = np.concatenate([[0], np.cumsum(widths)])
    emb_sum = torch.zeros((n, H_last), device=device)
    emb_sq = torch.zeros((n, H_last), device=device) if embedding_std else None
    samples = torch.empty((passes, n, k), device=device)
    masks = [torch.empty((passes, n, w), dtype=torch.bool) for w in widths] if return_masks else None

    block_rows = max(1, min(block_rows, n))
    group = max(1, min(passes, max_rows // block_rows))
    words_per_pass = -(-block_rows * int(offsets[-1]) // 4)
    words = torch.empty((group, words_per_pass), dtype=torch.int64, device=device)
    width_max = max(widths)
    buf_a = torch.empty(group * block_rows * width_max, device=device)
    buf_b = torch.empty_like(buf_a)
    buf_k = torch.empty_like(buf_a)

    for block, r0 in enumerate(range(0, n, block_rows)):
        r1 = min(r0 + block_rows, n)
        b = r1 - r0
        generator = make_generator(derive_seed(seed, block), device)
        h1 = torch.empty((b, widths[0]), device=device)
        for s0, part in rows.blocks(b, r0, r1):  # on disk: the block is read in slices
            torch.addmm(biases[0], part.to(device), w_first, out=h1[s0 - r0 : s0 - r0 + len(part)])
        h1.relu_()
        for t0 in range(0, passes, group):
            g = min(group, passes - t0)
            for j in range(g):
                words[j].random_(-(2**63), None, generator=generator)
            bits = words[:g].view(torch.int16)  # (g, 4·words_per_pass): pass j's bits in row j

            def keep(layer: int) -> torch.Tensor:  # called in this iteration only (so B023 does not apply)
                """Layer ``layer``'s keep-mask as float 0/1, (g, b, width)."""
                w = widths[layer]
                raw = bits[:, b * int(offsets[layer]) : b * int(offsets[layer + 1])].view(g, b, w)  # noqa: B023
                if masks is not None:
                    masks[layer][t0 : t0 + g, r0:r1] = raw >= threshold  # noqa: B023
                out = buf_k[: g * b * w].view(g, b, w)  # noqa: B023
                out.copy_(raw)
                return out.sub_(threshold - 1).clamp_(0.0, 1.0)

            current = buf_a[: g * b * widths[0]].view(g, b, widths[0])
            if L == 1:
                current.copy_(h1.expand(g, b, widths[0]))
            else:
                torch.mul(h1, keep(0), out=current)
            for layer in range(1, L):
                out = (buf_b if layer % 2 else buf_a)[: g * b * widths[layer]].view(g * b, widths[layer])
                torch.addmm(biases[layer], current.view(g * b, -1), w_rest[layer - 1], out=out)
                out.relu_()
                current = out.view(g, b, widths[layer])
                if layer < L - 1:
                    current.mul_(keep(layer))
            emb_sum[r0:r1] += current.sum(dim=0)
            if emb_sq is not None:
                emb_sq[r0:r1] += (current * current).sum(dim=0)
            current.mul_(keep(L - 1))
            out = torch.addmm(b_out, current.view(g * b, H_last), w_out)
            samples[t0 : t0 + g, r0:r1] = out.view(g, b, k)
    return _result(emb_sum.div_(passes), emb_sq, samples, passes, masks)  # in place: no second (n, H)


@torch.no_grad()
def mc_dropout_naive(
    model: MLP,
    X: np.ndarray | torch.Tensor,
    masks: Sequence[torch.Tensor] | None = None,
    *,
    passes: int | None = None,
    embedding_std: bool = False,
) -> MCResult:
    """The reference: T ordinary full forward passes through every layer.

    Args:
        model: the teacher.
        X: features, (n, d).
        masks: per hidden layer, keep-masks of shape (T, n, H_l), e.g. ``mc_dropout(...,
            return_masks=True).masks``; without them each pass uses ``F.dropout`` (global RNG)
            and ``passes`` must be given.
    """
    device = next(model.parameters()).device
    X_t = torch.as_tensor(X, dtype=torch.float32).to(device)
    if masks is None:
        if passes is None:
            raise ValueError("mc_dropout_naive needs masks or a number of passes.")
        model.train()
        runs = [model.forward_hidden(X_t) for _ in range(passes)]
    else:
        passes = len(masks[0])
        model.eval()
        runs = [model.forward_hidden(X_t, masks=[m[t].to(device) for m in masks]) for t in range(passes)]
    model.eval()
    hidden = torch.stack([h for _, h in runs])
    samples = torch.stack([out for out, _ in runs])
    emb_sq = (hidden * hidden).sum(dim=0) if embedding_std else None
    return _result(hidden.mean(dim=0), emb_sq, samples, passes, None)


def _deterministic(
    model: MLP, rows: FeatureRows, *, device: torch.device, block_rows: int, embedding_std: bool, return_masks: bool
) -> MCResult:
    """One pass with dropout off: the "no MC dropout" setting (std 0)."""
    n, H = len(rows), model.hidden[-1]
    hidden = torch.empty((n, H), device=device)
    samples = torch.empty((1, n, model.out_dim), device=device)
    for r0, block in rows.blocks(block_rows):
        r1 = r0 + len(block)
        samples[0, r0:r1], hidden[r0:r1] = model.forward_hidden(block.to(device))
    # in float64, so that _result's E[h²] − E[h]² is exactly 0 here (float32 squares leave ~1e-6)
    emb_sq = hidden.double() ** 2 if embedding_std else None
    masks = [torch.ones((1, n, w), dtype=torch.bool) for w in model.hidden] if return_masks else None
    return _result(hidden, emb_sq, samples, 1, masks)


def _result(
    embedding: torch.Tensor,
    emb_sq: torch.Tensor | None,
    samples: torch.Tensor,
    passes: int,
    masks: list[torch.Tensor] | None,
) -> MCResult:
    samples_np = samples.cpu().numpy()
    embedding_np = embedding.cpu().numpy()
    emb_std = None
    if emb_sq is not None:
        variance = emb_sq.cpu().numpy().astype(np.float64) / passes - embedding_np.astype(np.float64) ** 2
        emb_std = np.sqrt(np.clip(variance, 0.0, None)).astype(np.float32)
    return MCResult(
        embedding=embedding_np,
        prediction=samples_np.mean(axis=0, dtype=np.float64).astype(np.float32),
        prediction_std=samples_np.std(axis=0, dtype=np.float64).astype(np.float32),
        samples=samples_np,
        embedding_std=emb_std,
        masks=masks,
    )
