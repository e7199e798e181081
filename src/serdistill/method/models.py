"""The networks: one MLP class for baseline, teachers and students, and its dropout masks.

``MLP(6373, hidden=(512,)*4, dropout=p)`` is a teacher: each hidden layer is Linear, ReLU,
then dropout (no dropout on the input features, **decided**). ``MLP(6373, hidden=(512, 512))``
is a student. :meth:`MLP.forward_hidden` also returns the last hidden layer after its ReLU
and before its dropout: the teacher embedding, or the student layer matched to it.

Dropout masks come from :func:`keep_mask`, the one sampler used in training and in
Monte-Carlo inference (:mod:`serdistill.method.mc_dropout`): 16 random bits per unit, dropped
when below ``round(p·65536)``, so the realised rate is p to within 2^-17.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

MASK_BITS = 16


def drop_threshold(p: float) -> int:
    """The signed 16-bit threshold: a unit is kept when its random int16 is >= this value.

    Examples:
        >>> drop_threshold(0.0), drop_threshold(0.5)
        (-32768, 0)
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"A dropout rate must be in [0, 1); got {p}.")
    return min(round(p * 65536), 65535) - 32768


def random_int16(
    numel: int, *, generator: torch.Generator, device: torch.device | str = "cpu", out: torch.Tensor | None = None
) -> torch.Tensor:
    """``numel`` uniform int16 values from ``generator``, drawn as full-range int64 words.

    Drawing 64-bit words and viewing them as four int16 values is ~4x faster on CPU than
    drawing int16 values one by one, and the stream is defined the same way on every device.
    ``out`` (int64, at least ``ceil(numel / 4)`` long) avoids an allocation.
    """
    words = -(-numel // 4)
    if out is None:
        out = torch.empty(words, dtype=torch.int64, device=device)
    buf = out[:words]
    buf.random_(-(2**63), None, generator=generator)
    return buf.view(torch.int16)[:numel]


def keep_mask(
    shape: Sequence[int], p: float, *, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A boolean keep-mask (True = unit kept) with drop probability ``p``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> mask = keep_mask((1000, 512), 0.25, generator=g)
        >>> abs(1 - float(mask.float().mean()) - 0.25) < 0.01
        True
    """
    numel = math.prod(shape)
    bits = random_int16(numel, generator=generator, device=device)
    return (bits >= drop_threshold(p)).view(*shape)


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """An uninitialised ``nn.Linear`` whose weight, shape (out, in) as usual, is stored input-major.

    The weight is the transpose of a contiguous (in, out) tensor. Forward, ``x·Wᵀ`` then reads
    ``Wᵀ`` as it lies; backward, autograd computes the weight's gradient as ``xᵀ·g`` in the same
    layout (``mm``'s backward follows its argument's layout) instead of ``gᵀ·x``. With a wide
    input (6,373 features, batch 256) ``gᵀ·x`` is the slow product on this project's CPU
    (16 ms against 10 ms for ``xᵀ·g``, measured), and a student's training step takes about
    0.88x the time (``python -m benchmarks scale`` times steps both ways; docs/performance.md).
    The optimizer's state takes the same layout; state dicts keep the (out, in) shape, so saved
    models load either way.
    """
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features)
    layer.weight = nn.Parameter(torch.empty(in_features, out_features).t())
    return layer


class MLP(nn.Module):
    """A ReLU MLP with dropout after each hidden layer's ReLU and a linear output.

    Args:
        in_dim: number of input features.
        hidden: widths of the hidden layers.
        dropout: dropout rate after each hidden ReLU (0 = none).
        out_dim: number of outputs (1 per attribute).
        init: ``"glorot"`` (Glorot/Xavier uniform weights, zero biases: Keras's default,
            the authors' framework; **decided**) or ``"torch"`` (PyTorch's default
            U(±1/sqrt(fan_in)) for weights and biases).
        generator: CPU generator for the initial weights (instead of the global one).

    The output is ``(h·W + b)·output_scale + output_shift``, two fixed buffers (1 and 0
    unless set): the training loops set them to the training labels' std and mean, so the
    network learns standardised labels while predicting on the labels' own scale.

    Examples:
        >>> net = MLP(10, hidden=(8, 8), dropout=0.5, generator=torch.Generator().manual_seed(0))
        >>> out, hidden = net.eval().forward_hidden(torch.zeros(3, 10))
        >>> tuple(out.shape), tuple(hidden.shape)
        ((3, 1), (3, 8))
    """

    layers: nn.ModuleList
    output: nn.Linear
    output_scale: torch.Tensor
    output_shift: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (512, 512, 512, 512),
        *,
        dropout: float = 0.0,
        out_dim: int = 1,
        init: str = "glorot",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("An MLP needs at least one hidden layer.")
        drop_threshold(dropout)  # validates
        self.in_dim = int(in_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.out_dim = int(out_dim)
        widths = (self.in_dim, *self.hidden)
        # skip_init: nn.Linear's own initialisation would draw from torch's global generator;
        # reset_parameters below draws every weight from ``generator`` instead
        self.layers = nn.ModuleList(_linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = _linear(self.hidden[-1], self.out_dim)
        self.register_buffer("output_scale", torch.ones(self.out_dim))
        self.register_buffer("output_shift", torch.zeros(self.out_dim))
        self.reset_parameters(init, generator)

    @property
    def linears(self) -> list[nn.Linear]:
        """The hidden layers, typed (``self.layers`` holds only :class:`torch.nn.Linear`)."""
        return [cast(nn.Linear, layer) for layer in self.layers]

    def reset_parameters(self, init: str = "glorot", generator: torch.Generator | None = None) -> None:
        """Draw the initial weights (see the class docstring for ``init``) from ``generator``."""
        if init not in ("glorot", "torch"):
            raise ValueError(f"init must be 'glorot' or 'torch'; got {init!r}.")
        with torch.no_grad():
            for layer in (*self.linears, self.output):
                # drawn in (out, in) order whatever the weight's layout: the same values as nn.Linear's
                weight = torch.empty(layer.weight.shape, device=layer.weight.device)
                if init == "glorot":
                    bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
                    layer.weight.copy_(weight.uniform_(-bound, bound, generator=generator))
                    layer.bias.zero_()
                else:
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.copy_(weight.uniform_(-bound, bound, generator=generator))
                    layer.bias.uniform_(-bound, bound, generator=generator)

    def set_output_scaling(self, scale: torch.Tensor | float, shift: torch.Tensor | float) -> MLP:
        """Map outputs to the labels' scale: ``output·scale + shift`` (per output)."""
        with torch.no_grad():
            self.output_scale.copy_(torch.as_tensor(scale, dtype=torch.float32).expand(self.out_dim))
            self.output_shift.copy_(torch.as_tensor(shift, dtype=torch.float32).expand(self.out_dim))
        return self

    def forward(
        self, x: torch.Tensor, *, masks: Sequence[torch.Tensor] | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The output, shape (n, out_dim). See :meth:`forward_hidden`."""
        return self.forward_hidden(x, masks=masks, generator=generator)[0]

    def forward_hidden(
        self, x: torch.Tensor, *, masks: Sequence[torch.Tensor] | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output and the last hidden layer (after its ReLU, before its dropout).

        Args:
            x: inputs, shape (n, in_dim).
            masks: one keep-mask per hidden layer, shape (n, width); when given, dropout
                uses these (in any mode) as ``h · mask / (1 − p)``.
            generator: in training mode, draw the masks from this generator with
                :func:`keep_mask`; without one, training mode uses ``F.dropout``.
        """
        if masks is not None and len(masks) != len(self.layers):
            raise ValueError(f"Got {len(masks)} masks for {len(self.layers)} hidden layers.")
        active = masks is not None or (self.training and self.dropout > 0)
        scale = 1.0 / (1.0 - self.dropout)
        h = x
        last = x
        for i, layer in enumerate(self.layers):
            last = h = F.relu(layer(h))
            if not active:
                continue
            if masks is not None:
                h = h * masks[i].to(h.dtype) / (1.0 - self.dropout)
            elif generator is not None:
                keep = keep_mask(h.shape, self.dropout, generator=generator, device=h.device)
                h = h * keep.to(h.dtype).mul_(scale)
            else:
                h = F.dropout(h, self.dropout, training=True)
        return torch.addcmul(self.output_shift, self.output(h), self.output_scale), last

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, hidden={self.hidden}, dropout={self.dropout}, out_dim={self.out_dim}"
