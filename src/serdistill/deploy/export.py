"""A bundle as one ONNX graph: raw features in, the students' mean and std out.

The graph folds the whole prediction path of :meth:`serdistill.deploy.bundle.Bundle.predict_features`:
the normaliser (``(x - mean) / std`` in float64, 0 for constant features, clipped) and,
for every attribute group, its N students run side by side (their first layers as one
matrix product, the later ones batched), then the mean and the population std over the
students. Input ``features``: (batch, dim) float32, the raw openSMILE functionals; outputs
``mean`` and ``std``: (batch, A) float32 in the bundle's attribute order.

The model's metadata (``metadata_props``) records ``attributes`` (JSON list),
``feature_set``, ``dim``, ``serdistill`` (version), ``bundle_format`` and ``outputs``.

Examples:
    >>> from serdistill.deploy.bundle import load_bundle                       # doctest: +SKIP
    >>> data = export_onnx(load_bundle("emodb.bundle"), "model.onnx")   # doctest: +SKIP
    >>> import onnxruntime as ort                                        # doctest: +SKIP
    >>> mean, std = ort.InferenceSession("model.onnx").run(None, {"features": X})  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import warnings
from typing import Any

import numpy as np

from serdistill import __version__
from serdistill.base.errors import BundleError, SerdistillError

OPSET = 17
INPUT = "features"
OUTPUTS = ("mean", "std")
INSTALL_HINT = "pip install 'serdistill[serve]'"


class MissingDependency(SerdistillError, ImportError):
    """An optional package (onnx, onnxruntime, fastapi, uvicorn) is not installed."""


def require(*modules: str) -> None:
    """Import ``modules`` or raise :class:`MissingDependency` saying how to install them."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingDependency(
            f"This needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed; install the optional dependencies with: {INSTALL_HINT}"
        )


def build_module(bundle: Any):
    """The torch module computing ``(mean, std)`` from raw features, for :func:`export_onnx`."""
    from serdistill.base.errors import NotFittedError

    model, normaliser = bundle.model, bundle.normaliser
    try:
        groups = model.packed_students()
    except NotFittedError:
        groups = []
    if not groups:
        raise BundleError(f"Bundle {bundle.path}: the model holds no fitted students; it cannot be exported.")
    columns = [c for cols, _ in groups for c in cols]
    if sorted(columns) != list(range(len(model.attributes_))):
        raise BundleError(
            f"Bundle {bundle.path}: its groups do not cover each attribute once ({columns}); it is damaged. Train it anew."
        )
    packed = [p.detached("cpu") for _, p in groups]
    inverse = np.argsort(np.asarray(columns))
    return _graph(normaliser, packed, None if (inverse == np.arange(len(inverse))).all() else inverse)


def _graph_class():
    import torch
    from torch import nn

    class Graph(nn.Module):
        def __init__(self, normaliser: Any, packed: list, order: np.ndarray | None) -> None:
            super().__init__()
            mean = np.asarray(normaliser.mean_, dtype=np.float64)
            inv = np.where(normaliser.constant_, 0.0, 1.0 / np.asarray(normaliser.scale_, dtype=np.float64))
            self.register_buffer("shift", torch.as_tensor(mean))
            self.register_buffer("inv_scale", torch.as_tensor(inv))
            self.clip = None if normaliser.clip is None else float(normaliser.clip)
            self.sizes = [p.size for p in packed]
            self.depths = [len(p.rest) for p in packed]
            for i, p in enumerate(packed):
                w1, b1, rest, w_out, b_out = p.w1, p.b1, p.rest, p.w_out, p.b_out
                self.register_buffer(f"g{i}_w1", w1)
                self.register_buffer(f"g{i}_b1", b1)
                for j, (w, b) in enumerate(rest):
                    self.register_buffer(f"g{i}_w{j + 2}", w)
                    self.register_buffer(f"g{i}_b{j + 2}", b)
                self.register_buffer(f"g{i}_wout", w_out)
                self.register_buffer(f"g{i}_bout", b_out)
            self.order = None if order is None else torch.as_tensor(order, dtype=torch.long)

        def forward(self, x):
            z = (x.to(torch.float64) - self.shift) * self.inv_scale
            if self.clip is not None:
                z = torch.clamp(z, -self.clip, self.clip)
            z = z.to(torch.float32)
            means, stds = [], []
            for i, (n_students, depth) in enumerate(zip(self.sizes, self.depths)):
                w1, b1 = getattr(self, f"g{i}_w1"), getattr(self, f"g{i}_b1")
                h = torch.relu(torch.matmul(z, w1) + b1)  # (n, N*H)
                h = h.reshape(z.shape[0], n_students, -1).transpose(0, 1)  # (N, n, H)
                for j in range(depth):
                    h = torch.relu(torch.matmul(h, getattr(self, f"g{i}_w{j + 2}")) + getattr(self, f"g{i}_b{j + 2}"))
                out = torch.matmul(h, getattr(self, f"g{i}_wout")) + getattr(self, f"g{i}_bout")  # (N, n, k)
                mean = out.mean(dim=0)
                std = torch.sqrt(((out - mean) ** 2).mean(dim=0))  # population std, as numpy's default
                means.append(mean)
                stds.append(std)
            mean, std = torch.cat(means, dim=1), torch.cat(stds, dim=1)
            if self.order is not None:
                mean, std = mean[:, self.order], std[:, self.order]
            return mean, std

    return Graph


def _graph(normaliser: Any, packed: list, order: np.ndarray | None):
    """The graph module (its class is defined on first use, so importing this module needs no torch)."""
    global _GRAPH_CLASS
    if _GRAPH_CLASS is None:
        _GRAPH_CLASS = _graph_class()
    return _GRAPH_CLASS(normaliser, packed, order).eval()


_GRAPH_CLASS = None


def metadata(bundle: Any) -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX model."""
    from serdistill.deploy.bundle import BUNDLE_FORMAT

    return {
        "producer": "serdistill",
        "serdistill": __version__,
        "bundle_format": str(BUNDLE_FORMAT),
        "attributes": json.dumps(list(bundle.attributes)),
        "feature_set": bundle.feature_set,
        "dim": str(bundle.dim),
        "input": INPUT,
        "outputs": json.dumps(list(OUTPUTS)),
        "std": "population std over the students (ddof=0)",
        "normaliser_clip": json.dumps(bundle.normaliser.clip),
    }


def export_onnx(bundle: Any, path: str | os.PathLike[str] | None = None, *, opset: int = OPSET) -> bytes:
    """The ONNX model of ``bundle`` (a :class:`serdistill.deploy.bundle.Bundle`) as bytes; written to ``path`` if given.

    Raises:
        MissingDependency: torch's exporter needs ``onnx``, and it is not installed.
        BundleError: the bundle's model cannot be exported.
    """
    import torch

    require("onnx")
    import onnx

    module = build_module(bundle)
    example = torch.zeros(2, bundle.dim, dtype=torch.float32)
    buffer = io.BytesIO()
    axes = {INPUT: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUTS}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        with torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, metadata(bundle))
    proto.producer_name = "serdistill"
    proto.producer_version = __version__
    proto.doc_string = (
        f"serdistill bundle {bundle.path}: raw {bundle.feature_set} features ({bundle.dim}) -> "
        f"mean and std over the students of {', '.join(bundle.attributes)}"
    )
    data = proto.SerializeToString()
    if path is not None:
        from serdistill.base.io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(data)
    return data


def onnx_session(data: bytes, *, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` of an exported model (bytes)."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


__all__ = [
    "INPUT",
    "MissingDependency",
    "OPSET",
    "OUTPUTS",
    "build_module",
    "export_onnx",
    "metadata",
    "onnx_session",
    "require",
]
