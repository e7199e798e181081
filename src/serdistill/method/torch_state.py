"""Seeds, devices and checkpoints: what every torch training loop needs, in one place.

Randomness flows through explicit generators derived from one seed with
:func:`derive_seed`; :func:`resolve_device` turns a config's device into a
``torch.device`` with a clear error when CUDA is asked for and absent; checkpoints are
written atomically and read with weights-only unpickling. :mod:`serdistill.method.training` and
:mod:`serdistill.method.stacked` use them (and ``training`` re-exports them).
"""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serdistill.base.errors import ConfigError
from serdistill.base.io import atomic_path

#: The layout of the checkpoints the training loops write (bumped when it changes).
CHECKPOINT_FORMAT = 1


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` under the master ``seed``.

    Streams with different keys are independent (NumPy's SeedSequence spawning).

    Examples:
        >>> derive_seed(0, "teacher", 1) == derive_seed(0, "teacher", 1) != derive_seed(0, "teacher", 2)
        True
    """
    spawn = tuple(k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys)
    state = np.random.SeedSequence(int(seed), spawn_key=spawn).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (for code outside serdistill)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; ConfigError if it is CUDA and none is available."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"The 'device' parameter of [train] asks for {str(device)!r}, but torch {torch.__version__} sees no "
            "CUDA device: set device = 'cpu' (--device cpu), or run where a GPU is, with a CUDA build of torch."
        )
    return device


# ---------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically with torch.save."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights-only unpickling)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)
