"""One exception hierarchy: every error serdistill raises on purpose derives from SerdistillError.

Messages follow one shape: what was received, what was expected, and what to do,
naming the file or value at fault.
"""

from __future__ import annotations


class SerdistillError(Exception):
    """Base class of every error serdistill raises on purpose."""


class ManifestError(SerdistillError, ValueError):
    """A manifest is malformed: columns, files, labels or splits."""


class CorpusError(SerdistillError, ValueError):
    """A corpus folder does not have the layout its recipe expects."""


class AudioError(SerdistillError, ValueError):
    """An audio file cannot be used: unreadable, too short, silent, or gives non-finite features."""


class FeatureError(SerdistillError, ValueError):
    """A feature table lacks files, holds non-finite values, or does not fit the data."""


class ConfigError(SerdistillError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class BundleError(SerdistillError, ValueError):
    """A model bundle is missing parts or does not fit the data or the installed versions."""


class NotFittedError(SerdistillError, ValueError, AttributeError):
    """An estimator (a model, an ensemble, a normaliser) was used before ``fit``.

    A ValueError and an AttributeError, as scikit-learn's ``NotFittedError``."""


class WorkerError(SerdistillError, RuntimeError):
    """A worker process died while it worked (killed for memory, or crashed)."""


class ResultsError(SerdistillError, ValueError):
    """A results table (or grid, or consistency table) lacks columns or holds bad values."""
