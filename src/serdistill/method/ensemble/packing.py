"""Several same-shaped MLPs as one network: packed weights, and predictions from them.

:func:`pack` stacks N students' weights (:class:`PackedMLPs`): the first layers side by
side as one (d, N·H) matrix, so one pass over the features serves every member, the later
layers as batched matrices. :func:`stacked_predict` runs them on features read through
:class:`~serdistill.data.feature_rows.FeatureRows`; ONNX export (:mod:`serdistill.deploy.export`)
builds its graph from the same packing.

Examples:
    >>> import torch
    >>> from serdistill.method.models import MLP
    >>> nets = [MLP(6, (4, 4), generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    >>> packed = pack(nets)
    >>> packed.size, tuple(packed.w1.shape)
    (2, (6, 8))
    >>> stacked_predict(nets, np.ones((3, 6), np.float32)).shape
    (2, 3, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from serdistill.data.feature_rows import FeatureRows
from serdistill.method.models import MLP


@dataclass(frozen=True)
class PackedMLPs:
    """N same-shaped MLPs' weights, stacked (no dropout: for prediction).

    Attributes:
        w1, b1: the first layers side by side: (d, N·H1) and (N·H1,).
        rest: the later hidden layers, each (weights (N, H_in, H_out), biases (N, 1, H_out)).
        w_out, b_out: the output layers with the label scaling folded in: (N, H, k), (N, 1, k).
    """

    w1: torch.Tensor
    b1: torch.Tensor
    rest: list[tuple[torch.Tensor, torch.Tensor]]
    w_out: torch.Tensor
    b_out: torch.Tensor

    @property
    def size(self) -> int:
        """N, the members."""
        return int(self.w_out.shape[0])

    def detached(self, device: str | torch.device = "cpu") -> PackedMLPs:
        """A float32 copy on ``device``, sharing nothing with the models."""

        def copy(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device, torch.float32).clone()

        return PackedMLPs(
            copy(self.w1), copy(self.b1), [(copy(w), copy(b)) for w, b in self.rest], copy(self.w_out), copy(self.b_out)
        )


@torch.no_grad()
def pack(models: Sequence[MLP]) -> PackedMLPs:
    """Several same-shaped MLPs' weights, stacked for :func:`stacked_predict`."""
    w1 = torch.cat([m.linears[0].weight for m in models]).t()  # (d, N·H1)
    b1 = torch.cat([m.linears[0].bias for m in models])
    rest = [
        (torch.stack([m.linears[j].weight.t() for m in models]), torch.stack([m.linears[j].bias for m in models])[:, None])
        for j in range(1, len(models[0].layers))
    ]
    scale = torch.stack([m.output_scale for m in models])[:, None]  # label scaling, folded in
    w_out = torch.stack([m.output.weight.t() for m in models]) * scale
    shift = torch.stack([m.output_shift for m in models])[:, None]
    b_out = torch.stack([m.output.bias for m in models])[:, None] * scale + shift
    return PackedMLPs(w1, b1, rest, w_out, b_out)


@torch.no_grad()
def stacked_predict(
    models: Sequence[MLP], X: np.ndarray, *, rows: int = 4096, packed: PackedMLPs | None = None
) -> np.ndarray:
    """Outputs of several same-shaped MLPs (no dropout) at once: (N, n, k).

    The first layers are concatenated into one (d, N·H) GEMM, so one pass over X serves all
    members; the later layers run as batched matrix products. ``packed``: ``pack(models)``,
    when the caller keeps it between calls.
    """
    device = next(models[0].parameters()).device
    N = len(models)
    p = pack(models) if packed is None else packed
    out = np.empty((N, len(X), models[0].out_dim), np.float32)
    for start, block in FeatureRows(X).blocks(rows):
        xb = block.to(device)
        h = torch.addmm(p.b1, xb, p.w1).relu_().view(len(xb), N, -1).transpose(0, 1)
        for w, b in p.rest:
            h = torch.baddbmm(b, h, w).relu_()
        out[:, start : start + len(xb)] = torch.baddbmm(p.b_out, h, p.w_out).cpu().numpy()
    return out
