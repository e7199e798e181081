"""The layers of docs/architecture.md hold: no module imports from a layer above its own."""
from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "serdistill"
# bottom up, as in docs/architecture.md
LAYERS = {
    "base": ["errors", "io", "lifecycle", "events"],
    "data": ["manifest", "corpora", "audio", "segments", "features", "cache", "feature_table", "storage", "feature_rows", "dataset",
             "normalise"],
    "method": ["config", "metrics", "models", "torch_state", "training", "stacked", "mc_dropout", "reference", "health",
               "ensemble"],
    "study": ["settings", "analysis", "experiment", "results", "stats", "findings", "report", "render", "plots"],
    "deploy": ["bundle", "export", "serve", "web"],
    "runtime": ["engine", "cli", "__main__"],
}
IMPORT = re.compile(r"^\s*(?:from serdistill\.(\w+)|from serdistill import (\w+)|import serdistill\.(\w+))", re.M)


def _layer_of() -> dict[str, int]:
    return {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def test_every_module_has_a_layer():
    names = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")} - {"__init__"}
    names = {n for n in names if not n.startswith("__pycache__")}
    assert names - set(_layer_of()) == set(), "add the new module to LAYERS here and to docs/architecture.md"


def test_no_module_imports_from_a_higher_layer():
    rank = _layer_of()
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).parts[0].removesuffix(".py")
        if module not in rank:
            continue
        text = path.read_text(encoding="utf-8")
        for match in IMPORT.finditer(text):
            dependency = next(g for g in match.groups() if g)
            if dependency in rank and rank[dependency] > rank[module]:
                line = text[:match.start()].count("\n") + 1
                upward.append(f"{path.relative_to(SRC)}:{line} imports {dependency}")
    assert upward == []


def test_the_check_sees_an_upward_import():
    """The pattern finds imports inside functions too (where most upward ones would hide)."""
    text = "def f():\n    from serdistill.engine import report\n"
    assert [next(g for g in m.groups() if g) for m in IMPORT.finditer(text)] == ["engine"]


def test_the_training_code_reads_features_only_through_feature_rows():
    """Memory management stays behind one seam: no storage call in the loops, MC dropout or the models."""
    for name in ("training", "stacked", "mc_dropout", "models"):
        text = (SRC / f"{name}.py").read_text(encoding="utf-8")
        assert "storage" not in text, f"{name}.py calls serdistill.storage; read features through FeatureRows"
