"""Every hyper-parameter of the method, as frozen dataclasses read from and written to TOML.

A :class:`Config` has a few top-level values (seed, attributes, task) and one section per
part of the method. Presets are files (``configs/default.toml``, ``configs/quick.toml``,
``configs/paper.toml``; shipped in the package, see :data:`PRESETS`), not code branches. Values are checked
when a config is built; every bad value raises
:class:`~serdistill.base.errors.ConfigError` with one message shape:

    The 'lr' parameter of [teacher] must be a float in the range (0, inf). Got -1 instead.

Where the paper is silent the default is marked *decided* (each is explained where it is
defined, and in docs/experiment.md).

Examples:
    >>> config = Config.from_dict({"seed": 3, "student": {"epochs": 5}})
    >>> config.student.epochs, config.teacher.dropouts[0], config.seed
    (5, 0.45, 3)
    >>> Config.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serdistill.base.errors import ConfigError
from serdistill.base.io import write_text
from serdistill.data.manifest import ATTRIBUTES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TEACHER_DROPOUTS: tuple[float, ...] = (0.45, 0.50, 0.55, 0.60, 0.65)
UNLABELLED_SOURCES: tuple[str, ...] = ("none", "test", "unlabeled")
TASKS: tuple[str, ...] = ("single", "multi")
OPTIMIZERS: tuple[str, ...] = ("sgd", "nadam", "adam")
STUDENT_HEADS: tuple[str, ...] = ("own", "teacher", "frozen")
#: What ``serdistill experiment`` can run: the rows of the paper's Table 1 and Table 2
#: (the full model of Table 2 is T-S (test); see :mod:`serdistill.study.settings`).
PROTOCOL_SETTINGS: tuple[str, ...] = (
    "baseline",
    "ridge",
    "svr",
    "teachers",
    "ts_test",
    "ts_unlabeled",
    "ts_pseudo",
    "ts_top75",
    "abl_u0_mc1_n5",
    "abl_u1_mc0_n5",
    "abl_u1_mc1_n1",
    "abl_u0_mc1_n1",
    "abl_u1_mc0_n1",
)


# ---------------------------------------------------------------------------------------
# Checks: each field carries one in its metadata; __post_init__ runs them.


@dataclass(frozen=True)
class _Check:
    kind: type | str  # int, float, bool, str, or "ints"/"floats"/"strs" for lists
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    min_items: int = 1

    def describe(self) -> str:
        plural = isinstance(self.kind, str)
        name = {int: "an int", float: "a float", bool: "a bool", str: "a str"}.get(self.kind)  # type: ignore[arg-type]
        if plural:
            name = f"a non-empty list of {self.kind}"
        if self.choices:
            return f"{name} among {{{', '.join(repr(c) for c in self.choices)}}}"
        if self.kind in (bool, str):
            return name or ""
        if math.isinf(self.low) and math.isinf(self.high):
            return name or ""
        left = "(" if self.low_open or math.isinf(self.low) else "["
        right = ")" if self.high_open or math.isinf(self.high) else "]"
        return f"{name} in the range {left}{_num(self.low)}, {_num(self.high)}{right}"

    def convert(self, value: Any) -> Any:
        """Return ``value`` in canonical form (tuples for lists), or raise ValueError."""
        if value is None and self.optional:
            return None
        if isinstance(self.kind, str):
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ValueError
            item = {"ints": int, "floats": float, "strs": str}[self.kind]
            items = tuple(self._scalar(v, item) for v in value)
            if len(items) < self.min_items:
                raise ValueError
            return items
        return self._scalar(value, self.kind)

    def _scalar(self, value: Any, kind: type) -> Any:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        if kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                value = int(value)
        else:
            value = float(value)
        if math.isnan(value):
            raise ValueError
        too_low = value < self.low or (self.low_open and value == self.low)
        too_high = value > self.high or (self.high_open and value == self.high)
        if too_low or too_high:
            raise ValueError
        return value


def _num(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(int(value)) if float(value).is_integer() else str(value)


def _field(default: Any, check: _Check, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


def _positive_int(default: int, doc: str = "") -> Any:
    return _field(default, _Check(int, low=1), doc)


def _rate(default: float, doc: str = "") -> Any:
    return _field(default, _Check(float, low=0.0, high=1.0, high_open=True), doc)


def _lr(default: float) -> Any:
    return _field(default, _Check(float, low=0.0, low_open=True), "learning rate")


def _optional_int(doc: str) -> Any:
    return _field(None, _Check(int, low=1, optional=True), doc)


STEPS_DOC = "training length in optimizer steps; epochs are derived from the data's size (replaces epochs)"
MIN_EPOCHS_DOC = "with steps: train at least this many epochs (a large corpus then runs more steps)"
PATIENCE_DOC = "stop after this many epochs without a better development CCC (none: never)"
PATIENCE_STEPS_DOC = "the same patience in optimizer steps (with patience too, the longer of the two)"


class _Section:
    """Mixin: validation and dict conversion shared by every section."""

    SECTION = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check: _Check = f.metadata["check"]
            value = getattr(self, f.name)
            try:
                converted = check.convert(value)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"The {f.name!r} parameter of {self._where()} must be {check.describe()}. Got {value!r} instead."
                ) from None
            object.__setattr__(self, f.name, converted)
        self._check_together()

    def _check_together(self) -> None:
        """Checks that involve more than one field (overridden where needed)."""

    def _where(self) -> str:
        return f"[{self.SECTION}]" if self.SECTION else "the config"

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML-ready values: lists for tuples, ``None`` left out."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                out[f.name] = value.to_dict()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            elif value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build from plain values; unknown keys raise ConfigError listing the valid ones."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls._title()} must be a table of keys and values. Got {data!r} instead.")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ConfigError(
                f"Unknown key(s) {', '.join(repr(k) for k in unknown)} in {cls._title()}; valid keys: {', '.join(names)}."
            )
        kwargs = dict(data)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            sub = f.metadata.get("section")
            if sub is not None and f.name in kwargs:
                kwargs[f.name] = sub.from_dict(kwargs[f.name])
        return cls(**kwargs)

    @classmethod
    def _title(cls) -> str:
        return f"[{cls.SECTION}]" if cls.SECTION else "the config"


# ---------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Settings shared by every training loop.

    Attributes:
        batch_size: mini-batch size (**decided**: 256; the paper is silent).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        checkpoint_every: write a resumable checkpoint every this many epochs (when a
            checkpoint folder is given).
        init: initial weights: ``"glorot"`` (Glorot uniform, zero biases: Keras's default,
            the authors' framework; **decided**) or ``"torch"`` (PyTorch's default).
        standardise_labels: learn labels z-scored with the training set's mean and std,
            predicting on the original scale (**decided**). CCC is unchanged by the same
            affine map of predictions and labels, so this only reparametrises the output
            layer; it lets 1 − CCC move predictions to labels far from 0 (1..7).
        stacked: train the teachers, and the students, as stacked networks (:mod:`serdistill.method.stacked`):
            ``"auto"`` (on CUDA, not on the CPU, where it was measured slower:
            docs/performance.md), ``"on"`` or ``"off"``. The same students to float
            tolerance either way.
        stack_points: with stacking, the alpha/beta points (distinct ratios) trained in one
            stack, each with its N students.
    """

    SECTION = "train"
    batch_size: int = _positive_int(256, "mini-batch size (decided: the paper is silent)")
    device: str = _field("cpu", _Check(str), "torch device")
    checkpoint_every: int = _positive_int(1, "epochs between checkpoints")
    init: str = _field("glorot", _Check(str, choices=("glorot", "torch")))
    standardise_labels: bool = _field(True, _Check(bool))
    stacked: str = _field("auto", _Check(str, choices=("auto", "on", "off")), "teachers and students as stacked networks")
    stack_points: int = _positive_int(4, "alpha/beta points per stack")

    def stacks(self) -> bool:
        """Whether the students train stacked (``stacked``, ``"auto"`` resolved for ``device``)."""
        return self.stacked == "on" or (self.stacked == "auto" and self.device.startswith("cuda"))

    def _check_together(self) -> None:
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(
                f"The 'device' parameter of [train] must be a str among {{'cpu', 'cuda', 'cuda:N'}}. "
                f"Got {self.device!r} instead."
            )


@dataclass(frozen=True)
class BaselineConfig(_Section):
    """The single-MLP baseline: 4 x 512 ReLU, loss 1 - CCC, 200 epochs.

    The paper gives only the epochs; dropout 0.5 (the middle teacher rate) and the
    teachers' optimiser (SGD, lr 0.001) are **decided**.

    Length and early stopping, as in every trained section: ``epochs``, or ``steps``
    (optimizer steps; the epochs follow from the number of training segments and the batch
    size, the last epoch cut short so that exactly ``steps`` steps run) with ``min_epochs``
    as a floor (a corpus of 300 segments needs hundreds of epochs, one of 100,000 a few
    dozen: ``steps`` serves the first, ``min_epochs`` the second). ``patience`` (epochs) and
    ``patience_steps`` stop training when the development CCC has not improved for that long
    (given both, the longer of the two). The epoch with the best development CCC is kept
    either way.
    """

    SECTION = "baseline"
    enabled: bool = _field(True, _Check(bool), "train the baseline at all")
    hidden: tuple[int, ...] = _field((512, 512, 512, 512), _Check("ints", low=1))
    dropout: float = _rate(0.5, "dropout after each hidden ReLU (decided)")
    optimizer: str = _field("sgd", _Check(str, choices=OPTIMIZERS))
    lr: float = _lr(0.001)
    momentum: float = _field(0.0, _Check(float, low=0.0, high=1.0, high_open=True))
    epochs: int = _positive_int(200)
    steps: int | None = _optional_int(STEPS_DOC)
    min_epochs: int | None = _optional_int(MIN_EPOCHS_DOC)
    patience: int | None = _optional_int(PATIENCE_DOC)
    patience_steps: int | None = _optional_int(PATIENCE_STEPS_DOC)


@dataclass(frozen=True)
class TeacherConfig(_Section):
    """The N teachers: 4 x 512 ReLU, one dropout rate each, SGD lr 0.001, 150 epochs.

    Momentum 0 (plain SGD) is **decided**; the epoch with the best development CCC is kept.
    """

    SECTION = "teacher"
    hidden: tuple[int, ...] = _field((512, 512, 512, 512), _Check("ints", low=1))
    dropouts: tuple[float, ...] = _field(
        TEACHER_DROPOUTS, _Check("floats", low=0.0, high=1.0, high_open=True), "one per teacher"
    )
    optimizer: str = _field("sgd", _Check(str, choices=OPTIMIZERS))
    lr: float = _lr(0.001)
    momentum: float = _field(0.0, _Check(float, low=0.0, high=1.0, high_open=True))
    epochs: int = _positive_int(150)
    steps: int | None = _optional_int(STEPS_DOC)
    min_epochs: int | None = _optional_int(MIN_EPOCHS_DOC)
    patience: int | None = _optional_int(PATIENCE_DOC)
    patience_steps: int | None = _optional_int(PATIENCE_STEPS_DOC)


@dataclass(frozen=True)
class MCConfig(_Section):
    """Monte-Carlo dropout at inference.

    Attributes:
        enabled: ``False`` = the ablation "no MC dropout": one pass with dropout off.
        passes: stochastic passes per teacher (100 in the paper).
        block_rows: segments per block; each block draws its masks from its own
            generator, so results do not depend on memory settings, only on this.
    """

    SECTION = "mc"
    enabled: bool = _field(True, _Check(bool))
    passes: int = _positive_int(100)
    block_rows: int = _positive_int(8192)


@dataclass(frozen=True)
class StudentConfig(_Section):
    """The N students: 2 x 512 ReLU, no dropout, NAdam lr 1e-4, Eq. 1 loss.

    ``epochs`` is **decided** (50; the paper is silent), with the best development CCC
    epoch kept. ``alphas`` x ``betas`` is the grid searched on the development set.
    ``steps``, ``patience`` and ``patience_steps`` are as in :class:`BaselineConfig`; a
    student's step is one labelled batch (with unlabelled data, each comes after an
    unlabelled batch, so twice as many optimizer steps run).

    ``head`` is **decided** where the paper is silent: ``"own"`` (the paper's reading, and
    the default: the output layer starts from its own random weights), ``"teacher"`` (it
    starts from teacher i's output layer, the one that reads the embedding the student's last
    hidden layer learns) or ``"frozen"`` (teacher i's output layer, never trained); see
    docs/experiment.md for why this matters with unlabelled data.

    ``weight_decay`` (**decided**, 0 in the paper): decoupled weight decay (as AdamW's) of
    the students' optimizer; each step shrinks the weights by ``lr * weight_decay``.

    ``mse`` is **decided** too: ``"plain"`` (the paper's Eq. 1: the mean over segments and
    units) or ``"relative"`` (that MSE divided by the mean square of the teacher's training
    embedding: a scale-free term, which weighs as much as 1 − CCC; plain, it is an order of
    magnitude smaller on EmoDB, and the students barely learn the embedding).

    ``ratios`` gives the grid as alpha/beta ratios instead (each ratio r is the point
    (r/(1+r), 1/(1+r))); with NAdam or Adam only the ratio matters (docs/experiment.md).
    ``search`` is how the grid is searched: ``"grid"`` (every distinct ratio trained in
    full, the paper's) or ``"halving"`` (successive halving: every ratio trained for a
    fraction of the budget, the best 1/``halving_factor`` of them continued with
    ``halving_factor`` times the budget, and so on; the last round trains the survivors in
    full and picks among them).
    """

    SECTION = "student"
    hidden: tuple[int, ...] = _field((512, 512), _Check("ints", low=1))
    optimizer: str = _field("nadam", _Check(str, choices=OPTIMIZERS))
    lr: float = _lr(0.0001)
    epochs: int = _positive_int(50, "decided: the paper is silent")
    alphas: tuple[float, ...] = _field(GRID, _Check("floats", low=0.0, high=1.0))
    betas: tuple[float, ...] = _field(GRID, _Check("floats", low=0.0, high=1.0))
    steps: int | None = _optional_int(
        STEPS_DOC + " (a student's step is one labelled batch; with unlabelled data an unlabelled batch comes before each)"
    )
    min_epochs: int | None = _optional_int(MIN_EPOCHS_DOC)
    patience: int | None = _optional_int(PATIENCE_DOC)
    patience_steps: int | None = _optional_int(PATIENCE_STEPS_DOC)
    weight_decay: float = _field(
        0.0, _Check(float, low=0.0), "decoupled weight decay of the students' optimizer (0: none, the paper's)"
    )
    mse: str = _field(
        "plain",
        _Check(str, choices=("plain", "relative")),
        "the embedding MSE of Eq. 1: 'plain' (the paper's) or 'relative' (in units of the embedding's mean square)",
    )
    head: str = _field(
        "own",
        _Check(str, choices=STUDENT_HEADS),
        "the output layer: 'own' (drawn), 'teacher' (starts as teacher i's) or 'frozen' (teacher i's, fixed)",
    )
    ratios: tuple[float, ...] | None = _field(
        None,
        _Check("floats", low=0.0, low_open=True, optional=True),
        "the grid as alpha/beta ratios (replaces alphas x betas)",
    )
    search: str = _field(
        "grid",
        _Check(str, choices=("grid", "halving")),
        "'grid' (every ratio in full) or 'halving' (successive halving over the ratios)",
    )
    halving_factor: int = _field(3, _Check(int, low=2), "halving: keep the best 1/factor each round")

    def grid(self) -> list[tuple[float, float]]:
        """The (alpha, beta) points searched: ``alphas`` x ``betas``, or one point per ratio.

        Examples:
            >>> StudentConfig(alphas=(0.2, 0.4), betas=(0.4,)).grid()
            [(0.2, 0.4), (0.4, 0.4)]
            >>> StudentConfig(ratios=(1.0, 3.0)).grid()
            [(0.5, 0.5), (0.75, 0.25)]
        """
        if self.ratios is not None:
            return [(r / (1.0 + r), 1.0 / (1.0 + r)) for r in self.ratios]
        return [(a, b) for a in self.alphas for b in self.betas]


@dataclass(frozen=True)
class UnlabelledConfig(_Section):
    """Which unlabelled data the students see.

    Attributes:
        source: ``"none"``, ``"test"`` (transductive: the test segments without labels; the
            paper's main setting) or ``"unlabeled"`` (random unannotated segments: the
            manifest's split of that name, spelled as MSP-Podcast spells it; the section's own
            spelling, ``"unlabelled"``, is accepted too and read as ``"unlabeled"``).
        size: how many unannotated segments to draw per trial (default: as many as the test set).
        keep_fraction: keep only this fraction with the lowest teacher uncertainty
            (0.75 = the paper's "top 75%" setting).
    """

    SECTION = "unlabelled"
    source: str = _field("test", _Check(str, choices=UNLABELLED_SOURCES))
    size: int | None = _field(None, _Check(int, low=1, optional=True))
    keep_fraction: float = _field(1.0, _Check(float, low=0.0, high=1.0, low_open=True))

    def __post_init__(self) -> None:
        if self.source == "unlabelled":  # the section's spelling for the split's
            object.__setattr__(self, "source", "unlabeled")
        super().__post_init__()


@dataclass(frozen=True)
class ProtocolConfig(_Section):
    """The evaluation protocol of ``serdistill experiment``.

    Attributes:
        trials: K, trials with different seeds (10 in the paper).
        significance: the level of the paired one-tailed t-tests (0.01 in the paper).
        settings: which rows of Table 1 and Table 2 to run (default: all).
        top_fraction: the "top 75%" setting keeps this fraction of the test segments, those
            with the lowest std over N teachers x T passes.
        folds: 0 (default): one split, the manifest's; K >= 3: speaker-independent K-fold
            cross-validation (:func:`serdistill.data.corpora.splits.speaker_folds`): fold k's
            speakers are the test set, fold k + 1's the development set, the rest train, and
            every fold runs ``trials`` trials (a small corpus is not judged on 2 test speakers).
    """

    SECTION = "protocol"
    trials: int = _positive_int(10)
    significance: float = _field(0.01, _Check(float, low=0.0, high=1.0, low_open=True, high_open=True))
    settings: tuple[str, ...] = _field(
        PROTOCOL_SETTINGS,
        _Check("strs", choices=PROTOCOL_SETTINGS),
        "the settings an experiment runs (Table 1 and Table 2 rows)",
    )
    top_fraction: float = _field(
        0.75, _Check(float, low=0.0, high=1.0, low_open=True), "the fraction of test segments kept by the 'top 75%' setting"
    )
    folds: int = _field(0, _Check(int, low=0), "0: the manifest's splits; K >= 3: K-fold speaker cross-validation")

    def _check_together(self) -> None:
        if self.folds in (1, 2):
            raise ConfigError(
                f"The 'folds' parameter of [protocol] must be 0 (the manifest's own splits) or at least 3 "
                f"(a test, a development and a train fold). Got {self.folds!r} instead."
            )


@dataclass(frozen=True)
class ReferenceConfig(_Section):
    """The linear reference models fitted beside the networks (:mod:`serdistill.method.reference`).

    Attributes:
        models: which of ``"ridge"`` (ridge regression) and ``"svr"`` (a linear SVR), fitted
            on the same normalised training features, regularisation chosen on development
            CCC; reported beside the baseline in ``evaluate`` and in the experiment's Table 1.
            Not part of the paper's method; ``[]`` fits none.
    """

    SECTION = "reference"
    models: tuple[str, ...] = _field(
        ("ridge", "svr"), _Check("strs", choices=("ridge", "svr"), min_items=0), "linear models reported beside the baseline"
    )


_SECTIONS = {
    "train": TrainConfig,
    "baseline": BaselineConfig,
    "teacher": TeacherConfig,
    "mc": MCConfig,
    "student": StudentConfig,
    "unlabelled": UnlabelledConfig,
    "protocol": ProtocolConfig,
    "reference": ReferenceConfig,
}


def _section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"check": _Check(object), "section": cls})


@dataclass(frozen=True)
class Config(_Section):
    """The whole method.

    Attributes:
        seed: the master seed; every model, shuffle and mask stream derives from it.
        attributes: the attributes to predict, from ``serdistill.data.manifest.ATTRIBUTES``.
        task: ``"single"`` (one set of models per attribute, the paper's choice) or
            ``"multi"`` (one set predicting all attributes; an extension, never the default).
    """

    seed: int = _field(0, _Check(int, low=0))
    attributes: tuple[str, ...] = _field(ATTRIBUTES, _Check("strs", choices=ATTRIBUTES))
    task: str = _field("single", _Check(str, choices=TASKS))
    train: TrainConfig = _section(TrainConfig)
    baseline: BaselineConfig = _section(BaselineConfig)
    teacher: TeacherConfig = _section(TeacherConfig)
    mc: MCConfig = _section(MCConfig)
    student: StudentConfig = _section(StudentConfig)
    unlabelled: UnlabelledConfig = _section(UnlabelledConfig)
    protocol: ProtocolConfig = _section(ProtocolConfig)
    reference: ReferenceConfig = _section(ReferenceConfig)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            cls = f.metadata.get("section")
            if cls is not None and not isinstance(getattr(self, f.name), cls):
                raise ConfigError(
                    f"The {f.name!r} parameter of the config must be a {cls.__name__}. "
                    f"Got {getattr(self, f.name)!r} instead."
                )
        for f in dataclasses.fields(self):
            if "section" in f.metadata:
                continue
            check: _Check = f.metadata["check"]
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, check.convert(value))
            except (ValueError, TypeError):
                raise ConfigError(
                    f"The {f.name!r} parameter of the config must be {check.describe()}. Got {value!r} instead."
                ) from None
        if self.student.hidden[-1] != self.teacher.hidden[-1]:
            raise ConfigError(
                f"The 'hidden' parameter of [student] must end with the teachers' last width "
                f"({self.teacher.hidden[-1]}): the students' last hidden layer learns the teacher "
                f"embedding. Got {list(self.student.hidden)!r} instead."
            )
        if len(set(self.attributes)) != len(self.attributes):
            raise ConfigError(
                f"The 'attributes' parameter of the config lists an attribute twice. Got {list(self.attributes)!r} instead."
            )

    @property
    def n_members(self) -> int:
        """N, the number of teachers and of students (one per teacher dropout rate)."""
        return len(self.teacher.dropouts)

    def updated(self, changes: Mapping[str, Any]) -> Config:
        """A copy with ``changes`` (nested like the TOML: ``{"student": {"epochs": 5}}``) applied."""
        return Config.from_dict(_merge(self.to_dict(), changes))

    def to_toml(self) -> str:
        """The config as TOML text (what :func:`load_config` reads back)."""
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as TOML, atomically."""
        path = Path(path)
        write_text(path, self.to_toml())
        return path


#: The presets shipped with serdistill (``configs/NAME.toml`` in the repository): ``default``
#: (what ``train`` and ``experiment`` use without ``--config``), ``quick``, ``paper`` and ``demo`` (what
#: ``make demo`` trains within its 10 minutes).
PRESETS: tuple[str, ...] = ("default", "quick", "paper", "demo")
DEFAULT_PRESET = "default"


def preset_path(name: str) -> Path:
    """The file of the preset ``name`` (one of :data:`PRESETS`).

    Examples:
        >>> preset_path("paper").name
        'paper.toml'
    """
    if name not in PRESETS:
        raise ConfigError(f"The preset must be one of {', '.join(PRESETS)}. Got {name!r} instead.")
    return Path(__file__).resolve().parents[1] / "presets" / f"{name}.toml"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a config TOML file, or a preset by name (:data:`PRESETS`); missing keys take the
    paper's defaults.

    Raises:
        ConfigError: the file is missing or not TOML, or a value is bad (the message names the file).
    """
    if str(path) in PRESETS and not Path(path).is_file():
        path = preset_path(str(path))
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Config file {path} does not exist. Give a preset ({', '.join(PRESETS)}; the files are in "
            "configs/) or a TOML file, e.g. one written with Config().save(path)."
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"Config file {path} is not valid TOML ({err}).") from err
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Apply ``section.key=value`` strings (values in TOML syntax), as a CLI ``--set`` would.

    ``X.epochs=N`` without ``X.steps`` replaces a step budget (``steps``, ``min_epochs``) the
    config may have: the model then trains N epochs, as asked.

    Examples:
        >>> apply_overrides(Config(), ["student.epochs=3", "mc.passes=10"]).mc.passes
        10
        >>> budget = Config.from_dict({"teacher": {"steps": 800, "min_epochs": 20}})
        >>> teacher = apply_overrides(budget, ["teacher.epochs=4"]).teacher
        >>> teacher.epochs, teacher.steps, teacher.min_epochs
        (4, None, None)
    """
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Override {item!r} is not of the form section.key=value (e.g. student.epochs=5).")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word: take it as a string
        target = changes
        *parents, last = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    for section in ("baseline", "teacher", "student"):
        # epochs given on the command line mean epochs: they replace a preset's step budget
        asked = changes.get(section)
        if isinstance(asked, dict) and "epochs" in asked and "steps" not in asked:
            asked.setdefault("min_epochs", None)
            asked["steps"] = None
    return config.updated(changes)


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
