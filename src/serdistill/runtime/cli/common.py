"""Arguments shared by the commands that read a config and a manifest's features."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def level(text: str) -> float | None:
    """A level in dBFS (<= 0), or ``off`` for none."""
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level in dBFS such as -60, or 'off'; got {text!r}") from None
    if not value <= 0:
        raise argparse.ArgumentTypeError(f"a level in dBFS is at most 0; got {text}")
    return value


def add_audio_check_arguments(parser: argparse.ArgumentParser) -> None:
    """``--allow-truncated`` and ``--min-level``: the audio checks a user may relax."""
    from serdistill.data.audio import MIN_LEVEL

    parser.add_argument(
        "--allow-truncated",
        action="store_true",
        help="use WAV files whose header declares more audio than they hold (default: reject)",
    )
    parser.add_argument(
        "--min-level",
        type=level,
        default=MIN_LEVEL,
        metavar="DBFS",
        help=f"reject audio whose level is below this as no_speech: dither, DC offsets, room "
        f"tone (default: {MIN_LEVEL:g}; 'off' checks nothing)",
    )


def output_file(path: str) -> str:
    """Check, before any work, that ``-o`` can name a file: not a folder, in a folder that exists or can be made.

    Raises:
        SerdistillError: ``path`` is an existing folder, or its parent is a file.
    """
    from pathlib import Path

    from serdistill.base.errors import SerdistillError

    if path == "-":
        return path
    target = Path(path)
    if target.is_dir():
        raise SerdistillError(f"The output {path} is a folder; expected a file name, e.g. {target / 'predictions.csv'}.")
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise SerdistillError(f"The output {path} cannot be written: {parent} is a file, not a folder.")
            break
    return path


def add_label_arguments(parser: argparse.ArgumentParser, *, scale_default: str = "1,7") -> None:
    """``--label-range`` and ``--out-of-range``: the labels' scale, and what to do with labels outside it."""
    from serdistill.data.manifest import OUT_OF_RANGE

    parser.add_argument(
        "--label-range",
        type=_label_range,
        metavar="LO,HI",
        help=f"the scale the manifest's labels are on (default: {scale_default})",
    )
    parser.add_argument(
        "--out-of-range",
        choices=OUT_OF_RANGE,
        default="error",
        help="a label outside the scale: error (default: stop before any work, naming the "
        "files and values), warn (report and keep it), clip (report and clip it onto "
        "the scale)",
    )


def _label_range(text: str) -> tuple[float, float]:
    from serdistill.base.errors import ManifestError
    from serdistill.data.manifest import parse_label_range

    try:
        return parse_label_range(text)
    except ManifestError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def label_options(args: argparse.Namespace, default: tuple[float, float] | None = None) -> dict:
    """``label_range`` and ``out_of_range`` for :func:`serdistill.data.dataset.load_dataset` from the arguments."""
    from serdistill.data.manifest import DEFAULT_LABEL_RANGE

    chosen = getattr(args, "label_range", None) or default or DEFAULT_LABEL_RANGE
    return {"label_range": tuple(chosen), "out_of_range": getattr(args, "out_of_range", "error")}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` and ``--device``."""
    parser.add_argument(
        "--config",
        default="default",
        metavar="CONFIG",
        help="a preset (default: training lengths that fit the data, good from 300 to 100,000 "
        "segments; quick: minutes on a few hundred; paper: the paper's exact setting) or a "
        "config TOML file (configs/*.toml are the presets); default: default",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set student.epochs=5 --set seed=3 (repeatable)",
    )
    parser.add_argument(
        "--device", metavar="DEVICE", help="cpu, cuda or cuda:N (overrides train.device; default: the config's, cpu)"
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--features``, ``--feature-set``, ``--workers``, ``--cache-dir``, ``--label-range`` and ``--out-of-range``."""
    parser.add_argument(
        "--features", metavar="PARQUET", help="features from 'serdistill extract' (default: extract now, through the cache)"
    )
    parser.add_argument(
        "--feature-set",
        default="compare",
        choices=["compare", "egemaps"],
        help="the set to extract when --features is not given (default: compare, ComParE_2016)",
    )
    workers = default_workers()
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=workers,
        metavar="N",
        help=f"local processes: for extraction, and with --engine local for training tasks "
        f"(N / --task-cpus of them; 1 = train in this process) (default: the CPUs "
        f"available, here {workers})",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature cache folder (default: $SERDISTILL_CACHE/features, else ~/.cache/serdistill/features)",
    )
    add_label_arguments(parser)


def load_config_from_args(args: argparse.Namespace, overrides: Sequence[str] | None = None):
    """The config of ``--config`` with ``--set`` and ``--device`` applied."""
    from serdistill.method.config import apply_overrides, load_config
    from serdistill.method.torch_state import resolve_device

    config = load_config(args.config)
    overrides = list(args.set or []) if overrides is None else list(overrides)
    if getattr(args, "device", None):
        overrides.append(f'train.device="{args.device}"')
    if overrides:
        config = apply_overrides(config, overrides)
    resolve_device(config.train.device)  # a clear error now rather than after extraction
    return config


def load_data_from_args(args: argparse.Namespace, *, require_train: bool = True, engine=None):
    """The :class:`~serdistill.data.dataset.Dataset` of ``args.manifest`` (extracted on ``engine`` if given)."""
    from serdistill.data.dataset import load_dataset

    return load_dataset(
        args.manifest,
        features=args.features,
        feature_set=args.feature_set,
        cache_dir=args.cache_dir,
        workers=args.workers,
        require_train=require_train,
        engine=extraction_engine(engine),
        **label_options(args),
    )


def add_engine_arguments(parser: argparse.ArgumentParser, *, training: bool = True) -> None:
    """``--engine``, ``--ray-address``, ``--ray-cpus`` and (``training``) ``--task-cpus``."""
    group = parser.add_argument_group("engine", "where the work runs (see docs/scaling.md)")
    group.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: a pool of this machine's processes (default); ray: tasks on a Ray "
        "cluster (needs pip install 'serdistill[ray]')",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="an existing Ray cluster (e.g. 10.0.0.1:6379, or auto); default: start a local Ray",
    )
    group.add_argument(
        "--ray-cpus",
        type=positive_int,
        metavar="N",
        help="CPUs of the local Ray started when --ray-address is not given (default: all)",
    )
    if training:
        group.add_argument(
            "--task-cpus",
            type=positive_int,
            default=1,
            metavar="N",
            help="CPUs (and torch threads) per training task (default: 1); with --engine "
            "local the pool has --workers / N processes, and one process means "
            "training here, with torch's own threads",
        )


def engine_from_args(args: argparse.Namespace, config=None):
    """The engine of ``--engine``: Ray, or a local pool of ``--workers / --task-cpus`` processes.

    None (everything in this process) for ``local`` where that pool would have one process,
    for commands without ``--task-cpus`` (``extract`` has its own ``--workers`` pool), and
    when ``config`` trains stacked networks (``[train] stacked``, the default on CUDA): one
    process then trains every teacher, and every student of several grid points, at once.
    """
    from serdistill.runtime.engine import get_engine

    if getattr(args, "engine", "local") == "ray":
        return get_engine("ray", address=args.ray_address, num_cpus=args.ray_cpus, task_cpus=getattr(args, "task_cpus", 1))
    task_cpus = getattr(args, "task_cpus", None)
    if task_cpus is None or (config is not None and config.train.stacks()):
        return None
    processes = max(1, int(getattr(args, "workers", None) or default_workers()) // task_cpus)
    return get_engine("local", workers=processes, task_cpus=task_cpus) if processes > 1 else None


def extraction_engine(engine):
    """The engine feature extraction runs on: Ray's; None (the extractor's own ``--workers`` pool) otherwise."""
    return engine if getattr(engine, "name", None) == "ray" else None
