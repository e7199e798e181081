"""An HTTP service predicting arousal, valence and dominance of uploaded audio (FastAPI).

Endpoints:

- ``GET /``: a web page to upload (or record) audio and see the three attributes with
  their uncertainty.
- ``GET /health``: ``{"status": "ok", "bundle", "attributes", "feature_set", "dim",
  "backend", "serdistill", the limits, "scale", "corpus", "train_segments",
  "development_ccc"}`` (the last three from the bundle's metrics: what the page says of the model).
- ``POST /predict``: a multipart form with the audio in the field ``file`` (WAV, FLAC,
  OGG or MP3: what soundfile reads). Answers ``{"file", <attribute>..., <attribute>_std...,
  "duration", "scale", "clipped"}``: the students' mean, their std (the uncertainty), the
  duration in seconds, the label scale ``[low, high]`` the bundle was trained on, and
  ``"clipped": false``: predictions are never clipped to the scale, so a value outside it
  says the model is extrapolating.
- ``POST /predict?segments=true`` (or ``auto``: only uploads longer than ``segment_over``,
  or than ``max_seconds``):
  a long recording, up to ``max_long_seconds`` (an hour by default), streamed from disk
  through the voice-activity detector (:mod:`serdistill.data.segments`); answers ``{"file",
  "duration", "segments": [{"start", "end", <attribute>..., <attribute>_std...}, ...],
  "skipped_segments", "scale", "clipped"}``. The web page sends ``auto`` and draws a
  timeline for long uploads.

Bad input gets a 4xx answer ``{"detail": message, "kind": kind}``, never a 500, and the
service goes on: 400 (``empty``, ``bad_request``: no file, a broken form), 413
(``too_large``: more than ``max_upload_bytes``), 415 (``unsupported_type``: not
multipart or not an audio content type; ``unreadable``: not decodable audio), 422
(``too_long``: more than ``max_seconds`` of audio; ``too_short``, ``silent``,
``no_speech``, ``truncated``, ``nonfinite_samples``, ``nonfinite_features``, ``failed``:
the checks of :mod:`serdistill.data.audio`, as ``serdistill predict`` applies them). A model
that gives non-finite numbers (a damaged bundle) is a 500 ``model_error`` with a message,
never a number that is not one.

An upload is written to a temporary file, checked and passed through the same
:class:`serdistill.data.features.FeatureExtractor` as ``serdistill predict`` (no cache), in a
thread pool so that several requests are served at once. The model runs with
onnxruntime (the bundle exported to ONNX in memory at start-up, :mod:`serdistill.deploy.export`)
when ``onnx`` and ``onnxruntime`` are installed, else with torch.

Examples:
    >>> app = create_app("emodb.bundle", max_upload_bytes=20_000_000, max_seconds=60)  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)                 # doctest: +SKIP
"""
# no "from __future__ import annotations": FastAPI reads the handlers' annotations (Request) at run time

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from serdistill import __version__
from serdistill.base.errors import BundleError
from serdistill.data.audio import MIN_LEVEL
from serdistill.deploy.export import MissingDependency, require

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".mp3")
_GENERIC_TYPES = ("application/octet-stream", "application/ogg", "video/ogg", "binary/octet-stream")
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers beside the file itself
_CHUNK = 1 << 20
_STATUS = {
    "empty": 400,
    "bad_request": 400,
    "too_large": 413,
    "unsupported_type": 415,
    "unreadable": 415,
    "too_long": 422,
}  # every other rejection kind of serdistill.data.audio: 422


class RequestRejected(Exception):
    """A request the service answers with a 4xx: ``kind`` (see the module docstring) and a message."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail

    @property
    def status(self) -> int:
        return _STATUS.get(self.kind, 422)


@dataclass
class Predictor:
    """The bundle and the fastest way available to run it."""

    bundle: Any
    backend: str
    session: Any = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # torch's packed-weights cache is not meant for concurrent builds

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.session is not None:
            mean, std = self.session.run(None, {"features": X})
            mean, std = np.asarray(mean), np.asarray(std)
            self.bundle.check_outputs(mean, std)  # BundleError: a broken model, answered 500 model_error
            return mean, std
        with self._lock:
            return self.bundle.predict_features(X)


def make_predictor(bundle: Any, backend: str = "auto") -> Predictor:
    """A :class:`Predictor` on ``backend``: ``onnx``, ``torch`` or ``auto`` (onnx when installed)."""
    if backend not in ("auto", "onnx", "torch"):
        raise ValueError(f"backend must be 'auto', 'onnx' or 'torch'; got {backend!r}.")
    if backend != "torch":
        try:
            require("onnx", "onnxruntime")
        except MissingDependency:
            if backend == "onnx":
                raise
            logger.info("onnx/onnxruntime are not installed; the model runs with torch.")
        else:
            from serdistill.deploy.export import export_onnx, onnx_session

            try:
                return Predictor(bundle, "onnxruntime", onnx_session(export_onnx(bundle)))
            except Exception as err:
                if backend == "onnx":
                    raise
                logger.warning(
                    "The bundle could not be run with onnxruntime (%s: %s); it runs with torch.", type(err).__name__, err
                )
    return Predictor(bundle, "torch")


def _multipart_installed() -> bool:
    for name in ("python_multipart", "multipart"):
        try:
            __import__(name)
            return True
        except ImportError:
            continue
    return False


def create_app(
    bundle_path: str | os.PathLike[str],
    *,
    max_upload_bytes: int = 20 * 1024 * 1024,
    max_seconds: float = 60.0,
    backend: str = "auto",
    allow_truncated: bool = False,
    min_level: float | None = MIN_LEVEL,
    max_long_seconds: float = 3600.0,
    max_long_upload_bytes: int = 512 * 1024 * 1024,
    segment_over: float = 30.0,
):
    """The FastAPI application serving ``bundle_path`` (loaded and prepared now, not per request).

    Args:
        bundle_path: a bundle folder from ``serdistill train``.
        max_upload_bytes: the largest accepted upload (larger: 413).
        max_seconds: the longest accepted audio, in seconds (longer: 422).
        backend: ``auto`` (onnxruntime when installed, else torch), ``onnx`` or ``torch``.
        allow_truncated, min_level: the audio checks, as for
            :class:`serdistill.data.features.FeatureExtractor` (``min_level`` rejects uploads
            without speech: 422 ``no_speech``).
        max_long_seconds, max_long_upload_bytes: the limits of the segmented path
            (``?segments=true`` or ``auto``), whose audio is streamed from disk, never held whole.
        segment_over: with ``?segments=auto``, uploads longer than this (or than
            ``max_seconds``) are segmented.

    Raises:
        MissingDependency: fastapi or python-multipart is not installed.
        BundleError: the bundle cannot be loaded, or its features cannot be extracted from audio.
    """
    require("fastapi")
    if not _multipart_installed():
        require("python_multipart")
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool

    from serdistill.data.features import FeatureSet, feature_settings
    from serdistill.deploy.bundle import load_bundle

    if min(max_upload_bytes, max_long_upload_bytes) <= 0 or not min(max_seconds, max_long_seconds) > 0:
        raise ValueError("the upload and duration limits must be positive.")
    bundle = load_bundle(bundle_path, device="cpu")
    try:
        feature_set = FeatureSet(bundle.feature_set)
    except ValueError:
        raise BundleError(
            f"Bundle {bundle.path} was trained on features {bundle.feature_set!r}, which serdistill "
            "cannot extract from audio; it cannot be served."
        ) from None
    bundle.check_features(feature_set.value, feature_set.dim, feature_settings(feature_set), source="this installation")
    predictor = make_predictor(bundle, backend)
    scale = bundle.label_range
    trained = _trained_on(bundle)
    extractors = threading.local()

    def extractor():
        from serdistill.data.features import FeatureExtractor

        if not hasattr(extractors, "one"):  # one per thread: an extractor keeps state per call
            extractors.one = FeatureExtractor(
                feature_set,
                cache_dir=None,
                num_workers=1,
                verbose=False,
                allow_truncated=allow_truncated,
                min_level=min_level,
            )
        return extractors.one

    def analyse(tmp: str, name: str, mode: str) -> dict[str, Any]:
        """Check, extract and predict one upload saved at ``tmp`` (runs in a worker thread)."""
        import soundfile as sf

        try:
            duration = float(sf.info(tmp).duration)
        except Exception as err:
            raise RequestRejected(
                "unreadable",
                f"{name} is not audio soundfile can decode ({_short(err, tmp, name)}); send WAV, FLAC, OGG or MP3.",
            ) from None
        if mode == "true" or (mode == "auto" and duration > min(segment_over, max_seconds)):
            return analyse_segments(tmp, name, duration)
        if duration > max_seconds:
            raise RequestRejected(
                "too_long",
                f"{name} holds {duration:.1f} s of audio; this service accepts at "
                f"most {max_seconds:g} s in one piece. Send it with ?segments=true to get a "
                f"prediction per speech segment (up to {max_long_seconds:g} s), or cut it.",
            )
        one = extractor()
        table = one.process_files([tmp])
        if len(table) == 0:
            rejection = one.rejected[0] if one.rejected else None
            kind = rejection.kind if rejection is not None else "failed"
            reason = rejection.reason if rejection is not None else "no features could be extracted"
            raise RequestRejected(kind, f"{name} cannot be used: {_short(reason, tmp, name)}")
        mean, std = predictor.predict(table.to_numpy(dtype=np.float32))
        out: dict[str, Any] = {"file": name}
        for j, attribute in enumerate(bundle.attributes):
            out[attribute] = float(mean[0, j])
        for j, attribute in enumerate(bundle.attributes):
            out[f"{attribute}_std"] = float(std[0, j])
        out["duration"] = duration
        out["scale"], out["clipped"] = list(scale), False
        return out

    def analyse_segments(tmp: str, name: str, duration: float) -> dict[str, Any]:
        """The speech segments of a long upload, each predicted (the audio streamed, never held whole)."""
        from serdistill.data.audio import RejectedAudio
        from serdistill.data.segments import VoiceActivity, find_segments

        if duration > max_long_seconds:
            raise RequestRejected(
                "too_long",
                f"{name} holds {duration:.1f} s of audio; this service accepts at "
                f"most {max_long_seconds:g} s. Cut it into shorter parts.",
            )
        if not hasattr(extractors, "vad"):
            extractors.vad = VoiceActivity()
        try:
            segments = find_segments(tmp, vad=extractors.vad, allow_truncated=allow_truncated)
        except RejectedAudio as err:
            raise RequestRejected(
                err.rejection.kind, f"{name} cannot be used: {_short(err.rejection.reason, tmp, name)}"
            ) from None
        from serdistill.deploy.bundle import predict_segment_items

        kept, mean, std, skipped = predict_segment_items(
            extractor(), [(tmp, g.start, g.end) for g in segments], predictor.predict
        )
        rows: list[dict[str, Any]] = []
        for i, (_, start, end) in enumerate(kept):
            row: dict[str, Any] = {"start": start, "end": end}
            row.update({a: float(mean[i, j]) for j, a in enumerate(bundle.attributes)})
            row.update({f"{a}_std": float(std[i, j]) for j, a in enumerate(bundle.attributes)})
            rows.append(row)
        if not rows:
            raise RequestRejected(
                "no_speech", f"{name} cannot be used: none of its {len(segments)} speech segment(s) passed the audio checks."
            )
        return {
            "file": name,
            "duration": duration,
            "segments": rows,
            "skipped_segments": len(skipped),
            "scale": list(scale),
            "clipped": False,
        }

    app = FastAPI(
        title="serdistill",
        version=__version__,
        description="Arousal, valence and dominance of speech, with the students' uncertainty.",
    )
    app.state.bundle, app.state.predictor = bundle, predictor

    @app.exception_handler(RequestRejected)
    async def _rejected(request: Request, err: RequestRejected):
        return JSONResponse({"detail": err.detail, "kind": err.kind}, status_code=err.status)

    @app.exception_handler(BundleError)
    async def _broken_model(request: Request, err: BundleError):  # the service's fault, said plainly
        logger.error("%s", err)
        return JSONResponse({"detail": str(err), "kind": "model_error"}, status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):  # pragma: no cover - a bug, not bad input
        logger.exception("Unexpected error serving %s", request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(err).__name__}); see the server log", "kind": "internal"}, status_code=500
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "bundle": str(bundle.path),
            "attributes": bundle.attributes,
            "feature_set": bundle.feature_set,
            "dim": bundle.dim,
            "backend": predictor.backend,
            "serdistill": __version__,
            "max_upload_bytes": max_upload_bytes,
            "max_seconds": max_seconds,
            "max_long_seconds": max_long_seconds,
            "max_long_upload_bytes": max_long_upload_bytes,
            "segment_over": segment_over,
            "scale": list(scale),
            **trained,
        }

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    @app.post("/predict")
    async def predict(request: Request):
        mode = request.query_params.get("segments", "false").strip().lower()
        mode = {"1": "true", "yes": "true", "0": "false", "no": "false"}.get(mode, mode)
        if mode not in ("true", "false", "auto"):
            raise RequestRejected("bad_request", f"segments={mode!r}; expected true, false or auto.")
        limit = max_upload_bytes if mode == "false" else max_long_upload_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit + _FORM_OVERHEAD:
            raise RequestRejected(
                "too_large",
                f"The upload has {int(length)} bytes; this service accepts files of "
                f"at most {limit} bytes ({limit / 2**20:.3g} MiB).",
            )
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise RequestRejected(
                "unsupported_type",
                f"Got a request of type {content_type or 'none'!r}; expected "
                "multipart/form-data with the audio in the field 'file' "
                "(curl -F file=@speech.wav http://HOST:PORT/predict).",
            )
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as err:  # a broken or oversized form: the client's fault
            raise RequestRejected(
                "bad_request", f"The multipart form cannot be read ({err}); send the audio in the field 'file'."
            ) from None
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise RequestRejected(
                    "bad_request", "The form has no file in the field 'file'; send the audio as -F file=@speech.wav."
                )
            name = os.path.basename(upload.filename or "upload")
            kind = (upload.content_type or "").split(";")[0].strip().lower()
            if kind and not (kind.startswith("audio/") or kind in _GENERIC_TYPES):
                raise RequestRejected(
                    "unsupported_type",
                    f"{name} was sent as {kind!r}; expected audio (WAV, FLAC, OGG or MP3, content type audio/*).",
                )
            suffix = Path(name).suffix.lower()
            fd, tmp = tempfile.mkstemp(prefix="serdistill-upload-", suffix=suffix if suffix in AUDIO_EXTENSIONS else "")
            try:
                size = 0
                with os.fdopen(fd, "wb") as handle:  # to disk chunk by chunk: never the whole upload in memory
                    while chunk := await upload.read(_CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise RequestRejected(
                                "too_large",
                                f"{name} is larger than {limit} bytes "
                                f"({limit / 2**20:.3g} MiB), the most this service accepts"
                                + (" in one piece." if mode == "false" else "."),
                            )
                        handle.write(chunk)
                if not size:
                    raise RequestRejected("empty", f"{name} is empty (0 bytes); send a recording.")
                await form.close()
                return await run_in_threadpool(analyse, tmp, name, mode)
            finally:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        finally:
            await form.close()

    return app


def _trained_on(bundle: Any) -> dict[str, Any]:
    """What the page says of the model: the corpus (manifest) it was trained on, its size, and
    the students' development CCC per attribute group (from the bundle's metrics)."""
    data = bundle.metrics.get("data") or {}
    development = {
        group: (scores or {}).get("students") for group, scores in (bundle.metrics.get("development") or {}).items()
    }
    return {
        "corpus": data.get("corpus") or (Path(data["manifest"]).stem if data.get("manifest") else None),
        "train_segments": data.get("train"),
        "development_ccc": development,
    }


def _short(err: Any, tmp: str, name: str) -> str:
    """An error message with the temporary file's path replaced by the uploaded name."""
    text = str(err).strip() or type(err).__name__
    return text.replace(repr(tmp), name).replace(tmp, name)


def _page() -> str:
    return resources.files("serdistill.deploy").joinpath("web/index.html").read_text(encoding="utf-8")


def run(
    bundle_path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_bytes: int = 20 * 1024 * 1024,
    max_seconds: float = 60.0,
    backend: str = "auto",
    log_level: str = "info",
    allow_truncated: bool = False,
    min_level: float | None = MIN_LEVEL,
    **limits: Any,
) -> None:
    """Serve ``bundle_path`` with uvicorn until interrupted."""
    require("uvicorn")
    import uvicorn

    app = create_app(
        bundle_path,
        max_upload_bytes=max_upload_bytes,
        max_seconds=max_seconds,
        backend=backend,
        allow_truncated=allow_truncated,
        min_level=min_level,
        **limits,
    )
    logger.info("Serving %s (%s) on http://%s:%d", app.state.bundle.path, app.state.predictor.backend, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["AUDIO_EXTENSIONS", "Predictor", "RequestRejected", "create_app", "make_predictor", "run"]
