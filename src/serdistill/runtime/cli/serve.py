"""``serdistill serve BUNDLE``: an HTTP service (and web page) predicting the emotion of uploaded audio."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Serve a bundle over HTTP (FastAPI + uvicorn): GET / is a web page to upload or record
audio; GET /health describes the service; POST /predict takes a multipart upload in the
field 'file' (WAV, FLAC, OGG or MP3) and answers JSON with arousal, valence, dominance,
their std over the students (<attribute>_std), the duration in seconds, the label scale
the bundle was trained on ("scale") and "clipped": false (predictions are not clipped to
the scale). Bad input (empty, not audio, too large, too long, too short, silent, no
speech) gets a 4xx JSON answer {"detail", "kind"}. The model runs with onnxruntime when installed (exported in memory at
start-up), else torch. Needs: pip install 'serdistill[serve]'."""

EPILOG = """\
examples:
  serdistill serve emodb.bundle --port 8000
  curl -F file=@speech.wav http://127.0.0.1:8000/predict"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive; got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a bundle over HTTP: /predict, /health and a web page",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle folder from 'serdistill train'")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_float,
        default=20.0,
        metavar="MB",
        help="largest accepted upload in MiB (default: 20)",
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="longest accepted audio in seconds (default: 60)",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "onnx", "torch"],
        default="auto",
        help="run the model with onnxruntime or torch (default: auto, onnxruntime when installed)",
    )
    long = parser.add_argument_group("long recordings (POST /predict?segments=true or auto)")
    long.add_argument(
        "--max-long-seconds",
        type=_positive_float,
        default=3600.0,
        metavar="S",
        help="longest audio the segmented path accepts, streamed from disk (default: 3600)",
    )
    long.add_argument(
        "--max-long-upload-mb",
        type=_positive_float,
        default=512.0,
        metavar="MB",
        help="largest upload the segmented path accepts, in MiB (default: 512)",
    )
    long.add_argument(
        "--segment-over",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="with ?segments=auto (what the web page sends), segment uploads longer than S seconds (default: 30)",
    )
    from serdistill.runtime.cli.common import add_audio_check_arguments

    add_audio_check_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serdistill.deploy.export import require
    from serdistill.deploy.serve import run as serve

    require("fastapi", "uvicorn")
    serve(
        args.bundle,
        host=args.host,
        port=args.port,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_seconds=args.max_seconds,
        backend=args.backend,
        log_level="debug" if args.verbose else "info",
        allow_truncated=args.allow_truncated,
        min_level=args.min_level,
        max_long_seconds=args.max_long_seconds,
        max_long_upload_bytes=int(args.max_long_upload_mb * 1024 * 1024),
        segment_over=args.segment_over,
    )
    return 0
