"""The paper's protocol as one run: K trials of every setting of Table 1 and Table 2.

In each trial, for each attribute (single-task) or once for all (multi-task), the work that
settings share is done once:

1. the baseline, and the N teachers (trained once);
2. Monte-Carlo dropout of every teacher on the training, test and unlabelled segments
   (T passes), and one pass with dropout off (the "no MC dropout" embeddings);
3. the students of T-S (test) for every (alpha, beta) of the grid, chosen on the
   development set; the other student settings reuse that alpha and beta (**decided**:
   one grid search per trial and attribute, on the full model);
4. the other student settings, each one ensemble of N students: T-S (unlabeled),
   T-S (pseudo-label), T-S (top 75%), no unlabelled data, no MC dropout.

The N = 1 rows of Table 2 ("one teacher, one student") are the first member of the matching
N = 5 ensembles: student 1, taught by teacher 1 with the same seed, is the same model
whether or not four more pairs are trained beside it, so it is scored alone instead of
trained again.

Trial t runs with the seed ``derive_seed(config.seed, "trial", t)``, and each group with
the seeds :class:`~serdistill.method.ensemble.TSModel` would use for that seed, so T-S (test) of
trial t is ``serdistill train --set seed=<that seed>`` with ``[unlabelled] source = "test"``.

Everything lands in the run folder as it is finished, and a rerun reads it back::

    RUN_DIR/config.toml, meta.json          resolved config, versions, seeds, data
    RUN_DIR/trials/<t>/<group>/<setting>.json   test CCC of one setting (+ .npz arrays)
    RUN_DIR/trials/<t>/<group>/work/        checkpoints while the group runs (then removed)
    RUN_DIR/results.csv|json, grid.csv, consistency.csv, report.md|html, figures/
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serdistill.base.errors import ConfigError
from serdistill.base.io import atomic_path, finite_or_none, write_json, write_text
from serdistill.base.protocols import Engine
from serdistill.data.dataset import SPLIT_DISK_BYTES, Dataset
from serdistill.data.feature_rows import concat_embeddings, select_embedding_rows
from serdistill.data.storage import (
    concat_rows,
    is_on_disk,
    labelled_rows,
    release_memory,
    select_rows,
)
from serdistill.method.config import Config, UnlabelledConfig
from serdistill.method.ensemble import (
    Baseline,
    StudentEnsemble,
    TeacherEnsemble,
    TeacherMC,
    select_unlabelled,
    summarise_teachers,
    task_threads,
)
from serdistill.method.health import failed_members
from serdistill.method.metrics import ccc
from serdistill.method.reference import KINDS as REFERENCE_KINDS
from serdistill.method.reference import LinearReference
from serdistill.method.torch_state import derive_seed

logger = logging.getLogger(__name__)

#: Settings whose models are student ensembles, with (unlabelled data, MC embeddings).
STUDENT_SETTINGS: dict[str, tuple[str, bool]] = {
    "ts_test": ("test", True),
    "ts_unlabeled": ("unlabeled", True),
    "ts_pseudo": ("pseudo", True),
    "ts_top75": ("top", True),
    "abl_u0_mc1_n5": ("none", True),
    "abl_u1_mc0_n5": ("test", False),
}
#: N = 1 rows: the first member of this N = 5 setting.
SINGLE_MEMBER: dict[str, str] = {
    "abl_u1_mc1_n1": "ts_test",
    "abl_u0_mc1_n1": "abl_u0_mc1_n5",
    "abl_u1_mc0_n1": "abl_u1_mc0_n5",
}
#: What a setting needs before it can run.
NEEDS: dict[str, tuple[str, ...]] = {
    "ts_pseudo": ("ts_test",),
    "abl_u0_mc1_n5": ("ts_test",),
    "abl_u1_mc0_n5": ("ts_test",),
    "ts_unlabeled": ("ts_test",),
    "ts_top75": ("ts_test",),
    **{k: (v,) for k, v in SINGLE_MEMBER.items()},
}

ProgressHook = Callable[[dict[str, Any]], None]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes:
        run_dir: the run folder.
        results: long table ``trial, setting, attribute, ccc`` (test CCC).
        grid: long table ``trial, attribute, alpha, beta, dev_ccc``.
        consistency: long table ``attribute, who, std`` (Figure 2).
        report: the path of ``report.md``.
        not_run: setting -> why it did not run.
    """

    run_dir: Path
    results: pd.DataFrame
    grid: pd.DataFrame
    consistency: pd.DataFrame
    report: Path | None
    not_run: dict[str, str]


def trial_seed(config: Config, trial: int) -> int:
    """The seed of trial ``trial`` (0-based; with folds, the trial within its fold)."""
    return derive_seed(config.seed, "trial", trial)


def units(config: Config) -> list[int]:
    """Every run of the protocol: ``trials`` per fold (one fold: the manifest's own splits).

    Run ``u`` is fold ``u % folds``, trial ``u // folds`` (trial-major: adding trials to a
    finished run only appends runs); its results are the rows of ``trial = u`` in the results
    table, and the paired tests pair runs by ``u``.
    """
    return list(range(config.protocol.trials * max(1, config.protocol.folds)))


def fold_of(config: Config, unit: int) -> int:
    """The fold of run ``unit`` (0 without cross-validation)."""
    return unit % config.protocol.folds if config.protocol.folds else 0


def trial_of(config: Config, unit: int) -> int:
    """The trial (within its fold) of run ``unit``."""
    return unit // config.protocol.folds if config.protocol.folds else unit


def fold_data(data: Dataset, config: Config, fold: int) -> Dataset:
    """``data`` with fold ``fold``'s speaker-independent split (unchanged without folds).

    The labelled rows are re-split by speaker (:func:`serdistill.data.corpora.splits.speaker_folds`
    with the config's seed): fold ``fold`` is the test set, the next fold the development set,
    the others train. Rows of the ``unlabeled`` split stay there.
    """
    K = config.protocol.folds
    if not K:
        return data
    from serdistill.data.corpora.splits import fold_split
    from serdistill.data.manifest import Manifest

    table = data.manifest.table.copy()
    labelled = (table["split"] != "unlabeled").to_numpy()
    assignment = speaker_folds_of(data, config)
    split = fold_split([assignment[str(s)] for s in table.loc[labelled, "speaker"]], fold, K)
    table.loc[labelled, "split"] = split
    manifest = Manifest(table=table, path=data.manifest.path, label_range=data.manifest.label_range)
    return Dataset(
        manifest,
        data.X,
        feature_set=data.feature_set,
        settings=data.settings,
        feature_names=data.feature_names,
        dropped=data.dropped,
    )


def speaker_folds_of(data: Dataset, config: Config) -> dict[str, int]:
    """speaker -> fold for the labelled rows of ``data`` (seeded by ``config.seed``)."""
    from serdistill.data.corpora.splits import speaker_folds

    table = data.manifest.table
    labelled = table[table["split"] != "unlabeled"]
    genders = None
    if "gender" in labelled.columns:
        genders = {str(s): str(g) for s, g in zip(labelled["speaker"], labelled["gender"].fillna(""))}
    return speaker_folds(labelled["speaker"].astype(str), config.protocol.folds, genders=genders, seed=config.seed)


def plan(config: Config, data: Dataset) -> tuple[list[str], dict[str, str]]:
    """The settings that will run, in order, and why the others will not."""
    wanted = list(config.protocol.settings)
    not_run: dict[str, str] = {}
    for kind in REFERENCE_KINDS:
        if kind in wanted and kind not in config.reference.models:
            not_run[kind] = "not run: not in [reference] models"
    if "ts_unlabeled" in wanted and not data.has("unlabeled"):
        not_run["ts_unlabeled"] = "not run: the manifest has no unlabeled split"
    if not config.baseline.enabled and "baseline" in wanted:
        not_run["baseline"] = "not run: [baseline] enabled = false"
    if config.n_members == 1:
        for key in ("abl_u1_mc1_n1", "abl_u0_mc1_n1", "abl_u1_mc0_n1"):
            if key in wanted:
                not_run[key] = "not run: N = 1 already (one teacher dropout rate)"
    settings = [s for s in wanted if s not in not_run]
    for setting in list(settings):  # a setting needs its source run (e.g. pseudo-labels need T-S (test))
        for need in NEEDS.get(setting, ()):
            if need not in settings:
                settings.insert(settings.index(setting), need)
    order = list(dict.fromkeys(["baseline", *REFERENCE_KINDS, "teachers", "ts_test", *settings]))
    return [s for s in order if s in settings], not_run


def run_experiment(
    data: Dataset,
    config: Config,
    run_dir: str | Path,
    *,
    trials: Sequence[int] | None = None,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    report: bool = True,
    on_progress: ProgressHook | None = None,
    engine: Engine | None = None,
) -> ExperimentResult:
    """Run (or resume) the protocol on ``data`` into ``run_dir``; write the report.

    Args:
        data: the manifest and its raw features (train, development and test splits needed;
            an ``unlabeled`` split enables T-S (unlabeled)).
        config: the method and protocol (``config.protocol.trials`` trials).
        run_dir: the run folder; finished trials and settings in it are read back.
        trials: which trials to run (default: all); the others are read back if present.
        progress: show a progress bar.
        meta: extra facts for the report header (corpus, manifest, command).
        report: write the report at the end.
        on_progress: called with each epoch's dict (trial, group, setting, stage, member, epoch).
        engine: a :mod:`serdistill.runtime.engine` engine to run the trials on, one task each
            (``engine.task_cpus`` torch threads per task), all writing into ``run_dir`` (which
            must be visible where they run); then this process reads them back and writes the
            report. None (default) runs them here, and so does a local engine for a single
            trial (with torch's threads). The results are the same either way (same seeds,
            same torch threads); ``on_progress`` is not called for engine tasks.

    Raises:
        ConfigError: the run folder holds a run with another config, or a split is missing.
    """
    run_dir = Path(run_dir)
    first = fold_data(data, config, 0)  # with folds: raises now if the speakers are too few
    for split in ("train", "development", "test"):
        if not first.has(split):
            raise ConfigError(
                f"An experiment needs train, development and test splits; {split!r} has no "
                f"files with features (splits: {data.split_counts()})."
            )
    del first
    settings, not_run = plan(config, data)
    _prepare_run_dir(run_dir, config, data, meta or {})
    all_trials = units(config)
    todo = all_trials if trials is None else [t for t in trials if t in all_trials]
    if engine is not None and getattr(engine, "name", None) == "local" and len(todo) < 2:
        engine = None  # one trial: here, with torch's threads, rather than one 1-thread task
    groups = _groups(config)
    total = len(todo) * len(groups) * len(settings)
    bar = _bar(total, progress)
    if engine is not None and todo:
        from serdistill.method.torch_state import resolve_device

        threads = int(getattr(engine, "task_cpus", 1))
        gpus = 1 if resolve_device(config.train.device).type == "cuda" else 0
        finished = [
            run_dir / "trials" / str(t) / _safe(name) / f"{setting}.json"
            for t in todo
            for name, _ in groups
            for setting in settings
        ]

        def show_finished() -> None:  # the tasks' settings as their files appear
            bar.n = sum(path.is_file() for path in finished)
            bar.refresh()

        try:
            engine.map(
                _trial_task,
                todo,
                num_cpus=threads,
                num_gpus=gpus,
                shared={
                    "data": data,
                    "config": config,
                    "run_dir": str(run_dir.absolute()),
                    "meta": meta or {},
                    "threads": threads,
                },
                on_wait=show_finished if progress else None,
            )
        except BaseException:
            bar.close()
            raise
        bar.reset(total)  # counted again below, where finished settings are skipped
        _prepare_run_dir(run_dir, config, data, meta or {})  # this machine's versions in meta.json
    try:
        fold = None
        for t in sorted(todo, key=lambda u: (fold_of(config, u), u)):  # one fold's normalised splits at a time
            if fold != fold_of(config, t):
                fold = fold_of(config, t)
                arrays = pool = None  # the last fold's normalised copies go first
                # normalised after the tasks (each of which normalises its own): not held while they run
                arrays, pool = _fold_arrays(fold_data(data, config, fold), config)
            assert arrays is not None  # set with the first run's fold
            for name, columns in groups:
                group = _GroupRun(
                    run_dir / "trials" / str(t) / _safe(name),
                    config,
                    t,
                    name,
                    columns,
                    arrays,
                    pool,
                    settings,
                    bar,
                    on_progress,
                )
                group.run()
                del group  # its copies of the features go before the next group makes its own
            if report:
                _write_outputs(run_dir, config, settings, not_run, meta or {}, final=False)
    finally:
        bar.close()
    return _write_outputs(run_dir, config, settings, not_run, meta or {}, final=True, report=report)


def _fold_arrays(data: Dataset, config: Config) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray | None]:
    """The normalised train, development and test arrays of one fold, and the unannotated pool."""
    normaliser = data.normaliser()
    arrays = {
        split: data.arrays(split, attributes=config.attributes, normaliser=normaliser)
        for split in ("train", "development", "test")
    }
    pool = (
        data.arrays("unlabeled", attributes=config.attributes, normaliser=normaliser)[0] if data.has("unlabeled") else None
    )
    return arrays, pool


def _trial_task(trial: int, *, data: Dataset, config: Config, run_dir: str, meta: dict[str, Any], threads: int) -> None:
    """One engine task: trial ``trial`` into ``run_dir`` (its own ``trials/<trial>/`` folder)."""
    with task_threads(threads):
        run_experiment(data, config, run_dir, trials=[trial], progress=False, meta=meta, report=False)


# ---------------------------------------------------------------------------------------
# One trial of one group


class _GroupRun:
    """Every setting of one trial for one group of attributes, sharing teachers and MC passes."""

    def __init__(
        self,
        folder: Path,
        config: Config,
        trial: int,
        name: str,
        columns: list[int],
        arrays: dict[str, tuple[np.ndarray, np.ndarray]],
        pool: np.ndarray | None,
        settings: list[str],
        bar: Any,
        on_progress: ProgressHook | None,
    ) -> None:
        self.folder, self.config, self.trial, self.name, self.columns = folder, config, trial, name, columns
        self.attributes = [config.attributes[c] for c in columns]
        self.settings, self.bar, self.on_progress = settings, bar, on_progress
        self.within = trial_of(config, trial)  # the trial within its fold (with folds)
        self.seed = derive_seed(trial_seed(config, self.within), name)
        self.label = (
            f"fold {fold_of(config, trial) + 1}/{config.protocol.folds} trial {self.within + 1}/{config.protocol.trials}"
            if config.protocol.folds
            else f"trial {trial + 1}/{config.protocol.trials}"
        )
        X, y = arrays["train"]
        self.X, self.y = labelled_rows(X, y[:, columns])
        self.X_dev, self.y_dev = labelled_rows(arrays["development"][0], arrays["development"][1][:, columns])
        self.X_test, self.y_test = arrays["test"][0], arrays["test"][1][:, columns]
        self.pool = pool
        self.work = folder / "work"
        self._teachers: TeacherEnsemble | None = None
        self._heads: tuple[np.ndarray, np.ndarray] | None = None
        self._mc: dict[tuple[str, bool], TeacherMC] = {}
        self._unlabeled: np.ndarray | None = None
        if len(self.X) < 2 or len(self.X_dev) < 2:
            raise ConfigError(
                f"{name}: need at least 2 labelled training and development segments; got "
                f"{len(self.X)} and {len(self.X_dev)}."
            )

    # -- bookkeeping -----------------------------------------------------------------------

    def done(self, setting: str) -> bool:
        return (self.folder / f"{setting}.json").is_file()

    def record(
        self,
        setting: str,
        prediction: np.ndarray,
        extra: dict[str, Any] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Score ``prediction`` (n_test, k) on the labelled test rows and write the setting's files."""
        scores = {}
        for j, attribute in enumerate(self.attributes):
            labelled = np.isfinite(self.y_test[:, j])
            value = (
                ccc(prediction[labelled, j].astype(np.float64), self.y_test[labelled, j].astype(np.float64))
                if labelled.sum() >= 2
                else float("nan")
            )
            scores[attribute] = None if not math.isfinite(value) else float(value)
        if arrays:
            with atomic_path(self.folder / f"{setting}.npz") as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub reads the names as flags
        write_json(
            self.folder / f"{setting}.json",
            {
                "trial": self.trial,
                "group": self.name,
                "setting": setting,
                "ccc": scores,
                "n_test": int(len(self.X_test)),
                **(extra or {}),
            },
        )
        logger.info(
            "%s, %s, %s: test CCC %s",
            self.label,
            self.name,
            setting,
            ", ".join(f"{a} {v:.4f}" if v is not None else f"{a} n/a" for a, v in scores.items()),
        )

    def load(self, setting: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        info = json.loads((self.folder / f"{setting}.json").read_text(encoding="utf-8"))
        path = self.folder / f"{setting}.npz"
        arrays = dict(np.load(path)) if path.is_file() else {}
        return info, arrays

    def hook(self, setting: str) -> Callable[[dict[str, Any]], None]:
        def on_epoch(info: dict[str, Any]) -> None:
            stage = info.get("stage", "")
            member = info.get("member")
            text = f"{stage} {'' if member is None else member + 1} epoch {info.get('epoch')}/{info.get('epochs')}"
            if "alpha" in info:
                text += f" (a={info['alpha']:g}, b={info['beta']:g})"
            self.bar.set_postfix_str(text.replace("  ", " "))
            if self.on_progress is not None:
                self.on_progress({"trial": self.trial, "group": self.name, "setting": setting, **info})

        return on_epoch

    # -- shared work -----------------------------------------------------------------------

    def teachers(self) -> TeacherEnsemble:
        if self._teachers is None:
            self._teachers = TeacherEnsemble(
                self.config, seed=self.seed, on_epoch=self.hook("teachers"), checkpoint_dir=self.work / "teachers"
            )
            self._teachers.fit(self.X, self.y, self.X_dev, self.y_dev)
            self._heads = self._teachers.heads()
        return self._teachers

    def heads(self) -> tuple[np.ndarray, np.ndarray]:
        """The teachers' output layers (kept when their weights are dropped)."""
        if self._heads is None:
            self.teachers()
        assert self._heads is not None
        return self._heads

    def mc(self, which: str, enabled: bool = True) -> TeacherMC:
        """The teachers' MC results on ``train``, ``test`` or ``unlabeled`` (dropout off if not enabled)."""
        key = (which, enabled)
        if key not in self._mc:
            X = self.unlabeled() if which == "unlabeled" else {"train": self.X, "test": self.X_test}[which]
            # the same mask streams as TSModel.fit
            self._mc[key] = self.teachers().mc_stack(X, enabled=None if enabled else False)
            # the students' long settings run without the teachers' weights (5 x 16 MB at MSP size):
            # the next stack reads them back from their checkpoints in the work folder
            self._teachers = None
        return self._mc[key]

    def embeddings(self, which: str, enabled: bool = True) -> np.ndarray:
        """(N, n, H), held once per trial: read it, never write into it."""
        return self.mc(which, enabled).embeddings

    def unlabeled(self) -> np.ndarray:
        """The unannotated segments of this trial: as many as the test set, drawn anew per trial."""
        if self._unlabeled is None:
            self._unlabeled, _ = select_unlabelled(
                UnlabelledConfig(source="unlabeled", size=self.config.unlabelled.size),
                X_test=self.X_test,
                X_pool=self.pool,
                seed=trial_seed(self.config, self.within),
            )
        assert self._unlabeled is not None  # source "unlabeled" always selects rows
        return self._unlabeled

    # -- the settings ----------------------------------------------------------------------

    def run(self) -> None:
        pending = [s for s in self.settings if not self.done(s)]
        self.bar.update(len(self.settings) - len(pending))
        if not pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for setting in self.settings:
            if self.done(setting):
                continue
            self.bar.set_description(f"{self.label} {self.name} {setting}")
            if setting == "baseline":
                self.run_baseline()
            elif setting in REFERENCE_KINDS:
                self.run_reference(setting)
            elif setting == "teachers":
                self.run_teachers()
            elif setting in SINGLE_MEMBER:
                self.run_single(setting)
            else:
                self.run_students(setting)
            # a trial is one long task: each setting leaves its pages and freed heap behind
            release_memory(self.X, self.X_dev, self.X_test, self.pool, self._unlabeled)
            self.bar.update(1)
        shutil.rmtree(self.work, ignore_errors=True)

    def run_baseline(self) -> None:
        model = Baseline(
            self.config,
            seed=self.seed,
            on_epoch=_with_stage(self.hook("baseline"), "baseline"),
            checkpoint=self.work / "baseline.pt",
        )
        (self.work).mkdir(parents=True, exist_ok=True)
        model.fit(self.X, self.y, self.X_dev, self.y_dev)
        prediction = np.asarray(model.predict(self.X_test)).reshape(len(self.X_test), -1)
        self.record("baseline", prediction, {"dev_ccc": finite_or_none(model.dev_ccc_), "best_epoch": model.best_epoch_})

    def run_reference(self, kind: str) -> None:
        model = LinearReference(kind, seed=derive_seed(self.seed, kind)).fit(self.X, self.y, self.X_dev, self.y_dev)
        self.record(
            kind,
            model.predict(self.X_test),
            {"dev_ccc": [finite_or_none(v) for v in model.dev_ccc_], "choice": model.choice_, "n_train": model.n_train_},
        )

    def run_teachers(self) -> None:
        teachers = self.teachers()
        dev_ccc = [finite_or_none(s) for s in teachers.dev_ccc_]
        failed = failed_members("teacher", teachers.dev_ccc_, teachers.histories_, group=f"{self.label} {self.name}")
        mc = self.mc("test")
        mean, std = summarise_teachers(mc, return_std=True)
        one_pass = mc.samples[:, 0]  # (N, n, k): one MC run per teacher
        self.record(
            "teachers",
            np.asarray(mean).reshape(len(self.X_test), -1),
            {
                "dev_ccc": dev_ccc,
                "failed": failed,
                "best_epochs": [h[-1]["best_epoch"] for h in teachers.histories_],
                "epochs_run": [len(h) for h in teachers.histories_],
                "dropouts": list(self.config.teacher.dropouts),
                "passes": self.config.mc.passes,
            },
            {"one_pass_std": one_pass.std(axis=0), "mc_std": np.asarray(std).reshape(len(self.X_test), -1)},
        )

    def run_single(self, setting: str) -> None:
        info, arrays = self.load(SINGLE_MEMBER[setting])
        self.record(
            setting,
            arrays["members"][0],
            {"member_of": SINGLE_MEMBER[setting], "alpha": info.get("alpha"), "beta": info.get("beta")},
        )

    def run_students(self, setting: str) -> None:
        source, use_mc = STUDENT_SETTINGS[setting]
        X, y, emb = self.X, self.y, self.embeddings("train", use_mc)
        X_u = emb_u = None
        extra: dict[str, Any] = {"unlabelled": source, "mc": use_mc}
        if source == "test":
            X_u, emb_u = self.X_test, self.embeddings("test", use_mc)
        elif source == "unlabeled":
            X_u, emb_u = self.unlabeled(), self.embeddings("unlabeled")
        elif source == "top":
            mc = self.mc("test")
            _, std = summarise_teachers(mc, return_std=True)
            std = np.asarray(std).reshape(len(self.X_test), -1).mean(axis=1)
            k = max(1, int(round(self.config.protocol.top_fraction * len(self.X_test))))
            kept = np.sort(np.argsort(std, kind="stable")[:k])
            X_u, emb_u = select_rows(self.X_test, kept), select_embedding_rows(self.embeddings("test"), kept)
            extra["kept"] = int(k)
        elif source == "pseudo":
            _, full = self.load("ts_test")
            pseudo = full["members"].mean(axis=0)
            # train + test as one training set: on disk when the data are (MSP-Podcast size)
            X = concat_rows([self.X, self.X_test], SPLIT_DISK_BYTES if is_on_disk(self.X) else np.inf)
            y = np.concatenate([self.y, pseudo.astype(np.float32)])
            test = self.embeddings("test")
            emb = concat_embeddings(emb, test)
            extra["pseudo_labelled"] = int(len(self.X_test))
        alpha = beta = None
        if setting != "ts_test":
            info, _ = self.load("ts_test")
            alpha, beta = info["alpha"], info["beta"]
        students = StudentEnsemble(
            self.config,
            alpha=alpha,
            beta=beta,
            seed=self.seed,
            on_epoch=self.hook(setting),
            checkpoint_dir=self.work / setting,
        )
        students.fit(
            X, y, self.X_dev, self.y_dev, embeddings=emb, X_unlabelled=X_u, embeddings_unlabelled=emb_u, heads=self.heads()
        )
        members = students.predict_members(self.X_test)  # (N, n, k)
        extra.update(
            alpha=students.alpha_,
            beta=students.beta_,
            dev_ccc=students.dev_ccc_,
            n_unlabelled=0 if X_u is None else int(len(X_u)),
        )
        if setting == "ts_test":
            extra["grid"] = students.grid_
            chosen = next(r for r in students.grid_ if (r["alpha"], r["beta"]) == (students.alpha_, students.beta_))
            extra["failed"] = failed_members(
                "student", chosen["member_dev_ccc"], students.histories_, group=f"{self.label} {self.name}"
            )
        self.record(setting, members.mean(axis=0), extra, {"members": members, "std": members.std(axis=0)})
        shutil.rmtree(self.work / setting, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Reading a run back


def collect(run_dir: str | Path, config: Config) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The results, grid and consistency tables of every finished setting in ``run_dir``."""
    run_dir = Path(run_dir)
    rows, grid_rows, consistency = [], [], []
    groups = _groups(config)
    for t in units(config):
        for name, columns in groups:
            folder = run_dir / "trials" / str(t) / _safe(name)
            if not folder.is_dir():
                continue
            attributes = [config.attributes[c] for c in columns]
            for path in sorted(folder.glob("*.json")):
                info = json.loads(path.read_text(encoding="utf-8"))
                for attribute, value in info["ccc"].items():
                    rows.append(
                        {
                            "trial": t,
                            "setting": info["setting"],
                            "attribute": attribute,
                            "ccc": np.nan if value is None else value,
                        }
                    )
                for point in info.get("grid", []):
                    if point.get("eliminated"):  # dropped by successive halving: no full-budget score
                        point = {**point, "dev_ccc": None}
                    for attribute in attributes:
                        grid_rows.append(
                            {
                                "trial": t,
                                "attribute": attribute if len(attributes) == 1 else name,
                                "alpha": point["alpha"],
                                "beta": point["beta"],
                                "dev_ccc": np.nan if point["dev_ccc"] is None else point["dev_ccc"],
                            }
                        )
            teachers, students = folder / "teachers.npz", folder / "ts_test.npz"
            if teachers.is_file() and students.is_file():
                t_std, s_std = np.load(teachers)["one_pass_std"], np.load(students)["std"]
                for j, attribute in enumerate(attributes):
                    consistency += [{"attribute": attribute, "who": "teachers", "std": float(v)} for v in t_std[:, j]]
                    consistency += [{"attribute": attribute, "who": "students", "std": float(v)} for v in s_std[:, j]]
    results = pd.DataFrame(rows, columns=["trial", "setting", "attribute", "ccc"])
    grid = pd.DataFrame(grid_rows, columns=["trial", "attribute", "alpha", "beta", "dev_ccc"])
    return results, grid, pd.DataFrame(consistency, columns=["attribute", "who", "std"])


def collect_failed(run_dir: str | Path, config: Config) -> list[dict[str, Any]]:
    """Every failed teacher and student (:mod:`serdistill.method.health`) of the finished runs, with its run."""
    out = []
    for t in units(config):
        for name, _ in _groups(config):
            for setting in ("teachers", "ts_test"):
                path = Path(run_dir) / "trials" / str(t) / _safe(name) / f"{setting}.json"
                if path.is_file():
                    info = json.loads(path.read_text(encoding="utf-8"))
                    out += [{"trial": t, "group": name, **f} for f in info.get("failed", [])]
    return out


# ---------------------------------------------------------------------------------------
# Helpers


def _groups(config: Config) -> list[tuple[str, list[int]]]:
    if config.task == "single":
        return [(a, [j]) for j, a in enumerate(config.attributes)]
    return [("+".join(config.attributes), list(range(len(config.attributes))))]


def _safe(name: str) -> str:
    return name.replace("+", "_")


def _with_stage(hook: Callable[[dict[str, Any]], None], stage: str) -> Callable[[dict[str, Any]], None]:
    return lambda info: hook({"stage": stage, **info})


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="setting", dynamic_ncols=True)


def _config_identity(config: Config) -> dict[str, Any]:
    """What finished results depend on: the config without trials, device, stacking and the protocol's reporting."""
    data = config.to_dict()
    data["protocol"] = {k: v for k, v in data["protocol"].items() if k not in ("trials", "significance", "settings")}
    how = ("device", "checkpoint_every", "stacked", "stack_points")  # how it runs, not what it computes
    data["train"] = {k: v for k, v in data["train"].items() if k not in how}
    return data


def _prepare_run_dir(run_dir: Path, config: Config, data: Dataset, meta: dict[str, Any]) -> None:
    """Create the run folder, or check that it holds a run of the same config and data."""
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = {
        "config": _config_identity(config),
        "feature_set": data.feature_set,
        "splits": data.split_counts(),
        "n_features": int(data.X.shape[1]),
    }
    path = run_dir / "run.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("identity") != json.loads(json.dumps(identity)):
            diff = _diff(saved.get("identity", {}), json.loads(json.dumps(identity)))
            raise ConfigError(
                f"Run folder {run_dir} holds a run with another config or data ({diff}); its results "
                "cannot be mixed with this one's. Use another folder (-o), or delete this one to start afresh."
            )
    else:
        write_json(path, {"identity": identity})
    from serdistill.base.io import installed_versions
    from serdistill.study.report import _VERSIONED

    write_text(run_dir / "config.toml", config.to_toml())
    write_json(
        run_dir / "meta.json",
        {
            **meta,
            "versions": installed_versions(*_VERSIONED),
            "feature_set": data.feature_set,
            "splits": data.split_counts(),
            "dropped_files": len(data.dropped),
            "seeds": {str(t): trial_seed(config, t) for t in range(config.protocol.trials)},
            **({"folds": _fold_record(data, config)} if config.protocol.folds else {}),
        },
    )


def _fold_record(data: Dataset, config: Config) -> dict[str, Any]:
    """Which speakers test and develop in each fold, and which runs belong to it (for meta.json)."""
    assignment = speaker_folds_of(data, config)
    K, T = config.protocol.folds, config.protocol.trials
    return {
        "k": K,
        "trials_per_fold": T,
        "folds": [
            {
                "fold": f,
                "runs": [t * K + f for t in range(T)],
                "test_speakers": sorted(s for s, g in assignment.items() if g == f),
                "development_speakers": sorted(s for s, g in assignment.items() if g == (f + 1) % K),
            }
            for f in range(K)
        ],
    }


def _diff(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _diff(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: was {a!r}, now {b!r}"


def _write_outputs(
    run_dir: Path,
    config: Config,
    settings: list[str],
    not_run: dict[str, str],
    meta: dict[str, Any],
    *,
    final: bool,
    report: bool = True,
) -> ExperimentResult:
    results, grid, consistency = collect(run_dir, config)
    path = None
    if report and len(results):
        from serdistill.study.report import write_report

        saved = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
        trials_done = sorted(set(results["trial"]))
        title = "serdistill experiment" if final else "serdistill experiment (in progress)"
        path = write_report(
            run_dir,
            results,
            grid=grid if len(grid) else None,
            consistency=consistency if len(consistency) else None,
            config=config,
            meta={
                **saved,
                **meta,
                "not_run": not_run,
                "title": title,
                "failed": collect_failed(run_dir, config),
                "trials_finished": f"{len(trials_done)} of {len(units(config))}",
            },
        )
        if len(grid):
            with atomic_path(run_dir / "grid.csv") as tmp:
                grid.to_csv(tmp, index=False)
        if len(consistency):
            with atomic_path(run_dir / "consistency.csv") as tmp:
                consistency.to_csv(tmp, index=False, float_format="%.6g")
    return ExperimentResult(
        run_dir=run_dir, results=results, grid=grid, consistency=consistency, report=path, not_run=not_run
    )
