"""``serdistill export BUNDLE -o model.onnx``: the normaliser and the students as one ONNX graph."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Export a bundle as one ONNX graph: the normaliser (z-scores with the training statistics,
clipped) and the N students of every attribute, with their mean and std. Input
'features': (batch, dim) float32 raw openSMILE functionals of the bundle's feature set;
outputs 'mean' and 'std': (batch, attributes) float32, in the bundle's attribute order
(std: population std over the students). The model's metadata names the attributes, the
feature set, its dimension and the serdistill version. Needs onnx (and onnxruntime for the
check): pip install 'serdistill[serve]'."""

EPILOG = """\
examples:
  serdistill export emodb.bundle -o emodb.onnx
  python -c "import onnxruntime as ort; s = ort.InferenceSession('emodb.onnx'); print(s.get_modelmeta().custom_metadata_map)\""""  # noqa: E501


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    parser = subparsers.add_parser(
        "export",
        help="export a bundle (normaliser + students) as one ONNX graph",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle folder from 'serdistill train'")
    parser.add_argument("-o", "--output", required=True, metavar="ONNX", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default: 17)")
    parser.add_argument(
        "--no-check", action="store_true", help="skip comparing onnxruntime's outputs with the bundle's on random features"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from serdistill.deploy.bundle import load_bundle
    from serdistill.deploy.export import OPSET, export_onnx, onnx_session, require

    require("onnx")  # before loading a large bundle
    bundle = load_bundle(args.bundle, device="cpu")
    data = export_onnx(bundle, args.output, opset=args.opset or OPSET)
    message = f"Wrote {args.output} ({len(data) / 1e6:.1f} MB) from {bundle.path}"
    if not args.no_check:
        try:
            require("onnxruntime")
        except ImportError:
            message += "; onnxruntime is not installed, so the outputs were not checked"
        else:
            rng = np.random.default_rng(0)
            scale = np.where(bundle.normaliser.constant_, 1.0, bundle.normaliser.scale_)
            X = (bundle.normaliser.mean_ + rng.normal(scale=3.0, size=(16, bundle.dim)) * scale).astype(np.float32)
            mean, std = onnx_session(data).run(None, {"features": X})
            want_mean, want_std = bundle.predict_features(X)
            error = float(max(np.abs(mean - want_mean).max(), np.abs(std - want_std).max()))
            message += f"; onnxruntime matches the bundle to {error:.2g} (max abs difference on 16 random rows)"
    print(message, file=sys.stderr)
    return 0
