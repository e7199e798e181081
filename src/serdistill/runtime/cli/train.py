"""``serdistill train MANIFEST --config CONFIG -o BUNDLE``: train the teacher-student ensemble."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("serdistill.train")

DESCRIPTION = """\
Train the method on a manifest and write a model bundle (a folder): for each attribute
the baseline, N Monte-Carlo-dropout teachers and N students (alpha, beta chosen on the
development split), with the normaliser, the resolved config, the feature description,
the versions used and the development scores.

The normaliser is fitted on the train split only. The development split picks each
model's best epoch and the students' alpha and beta. The students' unlabelled data
follows [unlabelled] source in the config: 'test' (the test split's features, without
labels: the paper's transductive setting), 'unlabeled' (a sample of the 'unlabeled'
split) or 'none'.

Without --features the features are extracted (--feature-set, ComParE_2016 by default)
through the feature cache. Checkpoints are kept in BUNDLE.ckpt/ while training: an
interrupted run (Ctrl-C, a crash) resumes where it stopped when run again with the same
arguments; the folder is removed once the bundle is written. The bundle is written atomically: an existing BUNDLE is
replaced only by a complete new one."""

EPILOG = """\
examples:
  serdistill train emodb/manifest.csv --config configs/quick.toml -o emodb.bundle
  serdistill train emodb/manifest.csv --config configs/quick.toml -o emodb.bundle \\
      --features emodb/features.parquet --set student.epochs=10 --set mc.passes=20
  serdistill train msp.csv --config configs/paper.toml -o msp.bundle --device cuda
  serdistill train manifest.csv --config configs/quick.toml -o m.bundle --set 'attributes=["arousal"]'
  serdistill train manifest.csv --config configs/quick.toml -o m.bundle --engine ray --task-cpus 2

--set takes section.key=value with TOML values (student.alphas=[0.5], unlabelled.source="none").
Then: 'serdistill evaluate BUNDLE MANIFEST' and 'serdistill predict BUNDLE audio/ -o out.csv'."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    from serdistill.runtime.cli.common import add_config_arguments, add_data_arguments, add_engine_arguments, positive_int

    parser = subparsers.add_parser(
        "train",
        help="train teachers and students on a manifest; write a model bundle",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest CSV with train and development splits")
    parser.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="the bundle folder to write")
    add_config_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch CPU threads (default: torch's choice, one per core; on cores busy with "
        "other jobs, 1 can be much faster)",
    )
    parser.add_argument(
        "--restart", action="store_true", help="discard the checkpoints of an earlier, unfinished run and start afresh"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-model lines")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def _corpus(files: list[str], manifest: str) -> str:
    """A name for the corpus a model is trained on: the shipped EmoDB's, else the manifest's file name."""
    import os

    from serdistill.data.corpora.emodb import default_root

    root = str(default_root())
    if files and all(os.path.realpath(f).startswith(root + os.sep) for f in files[:50]):
        return "EmoDB (shipped with serdistill)"
    return Path(manifest).name


def checkpoint_dir(bundle: str | Path) -> Path:
    """Where ``train`` keeps its checkpoints for ``bundle``: ``BUNDLE.ckpt`` beside it."""
    bundle = Path(bundle).absolute()
    return bundle.with_name(bundle.name + ".ckpt")


def run(args: argparse.Namespace) -> int:
    """Train, write the bundle, print a summary (torch's thread count is restored afterwards)."""
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _train(args)
    finally:
        torch.set_num_threads(threads)


def _train(args: argparse.Namespace) -> int:
    import shutil

    from serdistill.data.dataset import describe_features, load_dataset
    from serdistill.deploy.bundle import check_target, save_bundle
    from serdistill.method.ensemble import TSModel
    from serdistill.runtime.cli.common import engine_from_args, extraction_engine, label_options, load_config_from_args

    tic = time.perf_counter()
    config = load_config_from_args(args)  # with --set and --device; a missing CUDA fails here
    output = Path(args.output).absolute()
    check_target(output)  # before hours of training, not after
    folder = checkpoint_dir(output)
    if args.restart and folder.exists():
        shutil.rmtree(folder)

    engine = engine_from_args(args, config)  # teachers and students as tasks (Ray: extraction chunks too)
    progress = Progress(enabled=not args.quiet)
    try:
        data = load_dataset(
            args.manifest,
            features=args.features,
            feature_set=args.feature_set,
            cache_dir=args.cache_dir,
            workers=args.workers,
            verbose=not args.quiet,
            engine=extraction_engine(engine),
            **label_options(args),
        )
        arrays = _arrays(data, config, args.manifest)
        _check_run(folder, config, arrays)
        model = TSModel(config, on_epoch=progress, checkpoint_dir=folder, engine=engine)
        model.fit(
            arrays["X"],
            arrays["y"],
            arrays["X_dev"],
            arrays["y_dev"],
            X_unlabelled=arrays["X_unlabelled"],
            unlabelled_info=arrays["unlabelled_info"],
        )
    finally:
        progress.close()
        if engine is not None:
            engine.close()
    seconds = time.perf_counter() - tic
    extra = {
        "data": {
            "manifest": str(Path(args.manifest).absolute()),
            "corpus": _corpus(data.manifest.files, args.manifest),
            "features": None if args.features is None else str(Path(args.features).absolute()),
            "splits": data.split_counts(),
            "dropped": len(data.dropped),
            "train": len(arrays["X"]),
            "development": len(arrays["X_dev"]),
            "unlabelled": 0 if arrays["X_unlabelled"] is None else len(arrays["X_unlabelled"]),
        },
        "train_seconds": seconds,
    }
    save_bundle(
        output, model, arrays["normaliser"], describe_features(data), extra=extra, label_range=data.manifest.label_range
    )
    shutil.rmtree(folder, ignore_errors=True)
    print(summary(model, output, seconds))
    return 0


def _arrays(data: Any, config: Any, manifest: str) -> dict[str, Any]:
    """Normalised train/development arrays and the unlabelled data the config asks for."""
    import numpy as np

    from serdistill.base.errors import ConfigError, ManifestError
    from serdistill.method.ensemble import select_unlabelled

    for split in ("train", "development"):
        if not data.has(split):
            raise ManifestError(
                f"Manifest {manifest} has no {split} files with features (it has {data.split_counts()}); "
                "training needs a train and a development split (the development split picks epochs and "
                "alpha/beta). Re-create the manifest with 'serdistill corpus', or mark some files 'development'."
            )
    attributes = list(config.attributes)
    normaliser = data.normaliser()
    X, y = data.arrays("train", attributes=attributes, normaliser=normaliser)
    X_dev, y_dev = data.arrays("development", attributes=attributes, normaliser=normaliser)
    for j, attribute in enumerate(attributes):
        counts = {"train": int(np.isfinite(y[:, j]).sum()), "development": int(np.isfinite(y_dev[:, j]).sum())}
        short = [f"{split} {n}" for split, n in counts.items() if n < 2]
        if short:
            raise ManifestError(
                f"Manifest {manifest} has too few {attribute} labels to train ({', '.join(short)}; at least 2 "
                f"per split are needed). Label more files, or leave {attribute} out: "
                f"--set 'attributes={[a for a in attributes if a != attribute]}'."
            )
    source = config.unlabelled.source
    # only the splits the source reads (each is a normalised copy: 258 MB for MSP-Podcast's test set)
    X_test = (
        data.arrays("test", attributes=attributes, normaliser=normaliser)[0]
        if data.has("test") and source in ("test", "unlabeled")
        else None
    )
    X_pool = (
        data.arrays("unlabeled", attributes=attributes, normaliser=normaliser)[0]
        if data.has("unlabeled") and source == "unlabeled"
        else None
    )
    if source == "test" and X_test is None:
        raise ConfigError(
            f"The config's [unlabelled] source is 'test', but manifest {manifest} has no test split "
            f"(it has {data.split_counts()}). Add a test split, or use --set unlabelled.source=none "
            "(or unlabeled, with an 'unlabeled' split)."
        )
    X_unlabelled, info = select_unlabelled(config.unlabelled, X_test=X_test, X_pool=X_pool, seed=config.seed)
    return {
        "X": X,
        "y": y,
        "X_dev": X_dev,
        "y_dev": y_dev,
        "X_unlabelled": X_unlabelled,
        "unlabelled_info": info,
        "normaliser": normaliser,
    }


def _check_run(folder: Path, config: Any, arrays: dict[str, Any]) -> None:
    """Record what the checkpoints in ``folder`` belong to; refuse to resume another run's."""
    import hashlib
    import json

    from serdistill.base.errors import ConfigError
    from serdistill.base.io import write_json

    def digest(X: Any) -> str | None:
        return None if X is None else hashlib.blake2b(X.tobytes(), digest_size=8).hexdigest()

    settings = config.to_dict()
    settings["train"].pop("device", None)  # a run may resume on another device
    record = {"config": settings, "data": {key: digest(arrays[key]) for key in ("X", "X_dev", "X_unlabelled")}}
    record = json.loads(json.dumps(record))
    path = folder / "run.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved != record:
            what = "config" if saved is None or saved.get("config") != record["config"] else "data"
            raise ConfigError(
                f"{folder} holds checkpoints of an unfinished run with another {what}; this run cannot "
                "resume from them. Rerun with the same arguments to resume it, or add --restart to discard "
                "them and start afresh."
            )
        logger.info("Resuming from the checkpoints in %s", folder)
    else:
        write_json(path, record)


class Progress:
    """The ``on_epoch`` hook: a progress bar per model (on a terminal) and one line per finished model.

    Models trained at the same time (tasks of the local pool report their epochs as they
    end, interleaved) each keep their own bar and their own time.
    """

    def __init__(self, *, enabled: bool = True, stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.models: dict[tuple, list[Any]] = {}  # key -> [bar or None, seconds]

    def __call__(self, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        key = (info.get("group"), info.get("stage"), info.get("member"), info.get("alpha"), info.get("beta"))
        if key not in self.models:
            bar = None
            if self.stream.isatty():
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=info["epochs"],
                    initial=info["epoch"] - 1,
                    leave=False,
                    unit="epoch",
                    desc=f"{info.get('group')}: {info.get('name')}",
                    file=self.stream,
                    dynamic_ncols=True,
                )
            self.models[key] = [bar, 0.0]
        state = self.models[key]
        state[1] += float(info.get("seconds", 0.0))
        if state[0] is not None:
            state[0].update(1)
            state[0].set_postfix_str(f"dev CCC {info['dev_ccc']:.3f}", refresh=False)
        if info.get("last", info["epoch"] == info["epochs"]):
            if state[0] is not None:
                state[0].close()
            del self.models[key]
            stopped = f", stopped early at {info['epoch']}" if info.get("stopped_early") else ""
            print(
                f"{info.get('group')}: {info.get('name')}: best dev CCC {info['best_dev_ccc']:.3f} "
                f"at epoch {info['best_epoch']}/{info['epochs']}{stopped} ({state[1]:.1f} s)",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        for bar, _ in self.models.values():
            if bar is not None:
                bar.close()
        self.models.clear()


def summary(model: Any, output: Path, seconds: float) -> str:
    """Development CCC per attribute (baseline, teachers, students), alpha/beta, time."""
    groups = list(model.dev_ccc_)
    width = max(12, *(len(g) + 2 for g in groups))
    lines = ["Development CCC".ljust(10) + "".join(g.rjust(width) for g in groups)]
    for kind in ("baseline", "teachers", "students", "ridge", "svr"):
        values = [model.dev_ccc_[g].get(kind) for g in groups]
        if kind in ("ridge", "svr") and all(v is None for v in values):
            continue
        lines.append(kind.ljust(10) + "".join(("-" if v is None else f"{v:.4f}").rjust(width) for v in values))
    lines.append("alpha/beta".ljust(10) + "".join(f"{model.alpha_[g]:g}/{model.beta_[g]:g}".rjust(width) for g in groups))
    unlabelled = model.unlabelled_
    lines.append(f"Unlabelled data: {unlabelled.get('source')} ({unlabelled.get('n', 0)} segments).")
    lines.append(f"Trained in {seconds:.1f} s. Wrote {output}")
    return "\n".join(lines)
