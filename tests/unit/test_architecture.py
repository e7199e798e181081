"""The layers of docs/architecture.md hold: one folder per layer, and no module imports from a layer above its own."""
from __future__ import annotations

import re
from pathlib import Path

import serdistill

SRC = Path(__file__).resolve().parents[2] / "src" / "serdistill"
LAYERS = list(serdistill.LAYERS)  # bottom up, as in docs/architecture.md
# an import of serdistill.LAYER..., or of a module by its short name (serdistill.training)
IMPORT = re.compile(r"^\s*(?:from serdistill\.(\w+)|from serdistill import (\w+)|import serdistill\.(\w+))", re.M)
SHORT = {name: layer for layer, names in serdistill.LAYERS.items() for name in names}


def _layer(name: str) -> str | None:
    return name if name in serdistill.LAYERS else SHORT.get(name)


def test_every_module_sits_in_its_layers_folder():
    top = {p.name.removesuffix(".py") for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert top == {"__init__", "__main__", *LAYERS}, "a module belongs in one layer's folder"
    for layer, names in serdistill.LAYERS.items():
        present = {p.name.removesuffix(".py") for p in (SRC / layer).iterdir()
                   if p.suffix == ".py" or p.is_dir() and p.name != "__pycache__"} - {"__init__"}
        present -= {"emodb"}  # data/emodb: the embedded corpus, not code
        assert present == set(names), f"{layer}/: add the new module to serdistill.LAYERS and docs/architecture.md"


def test_no_module_imports_from_a_higher_layer():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).parts
        if len(parts) < 2:  # serdistill/__init__.py and __main__.py sit above every layer
            continue
        text = path.read_text(encoding="utf-8")
        for match in IMPORT.finditer(text):
            dependency = _layer(next(g for g in match.groups() if g))
            if dependency is not None and rank[dependency] > rank[parts[0]]:
                line = text[:match.start()].count("\n") + 1
                upward.append(f"{path.relative_to(SRC)}:{line} imports from {dependency}")
    assert upward == []


def test_the_check_sees_an_upward_import():
    """The pattern finds imports inside functions too (where most upward ones would hide), by layer or short name."""
    text = "def f():\n    from serdistill.runtime.engine import report\n    import serdistill.serve\n"
    assert [_layer(next(g for g in m.groups() if g)) for m in IMPORT.finditer(text)] == ["runtime", "deploy"]


def test_the_code_uses_the_layer_paths_and_the_short_names_are_the_same_modules():
    import serdistill.ensemble
    import serdistill.method.ensemble
    import serdistill.method.training
    import serdistill.training
    from serdistill.cli.train import run as short_run
    from serdistill.runtime.cli.train import run

    assert serdistill.training is serdistill.method.training
    assert serdistill.training.__spec__.name == "serdistill.method.training"  # its own spec, not the alias's
    assert serdistill.ensemble.TSModel is serdistill.method.ensemble.TSModel and short_run is run
    short = re.compile(rf"\bserdistill\.({'|'.join(SHORT)})\b")
    found = [f"{p.relative_to(SRC)}: {m.group(0)}" for p in SRC.rglob("*.py") if p != SRC / "__init__.py"  # the aliases
             for m in short.finditer(p.read_text())]
    assert found == [], "inside serdistill, import modules by their layer paths"


def test_the_training_code_reads_features_only_through_feature_rows():
    """Memory management stays behind one seam: no storage call in the loops, MC dropout or the models."""
    for name in ("training", "stacked", "mc_dropout", "models"):
        text = (SRC / "method" / f"{name}.py").read_text(encoding="utf-8")
        assert "storage" not in text, f"{name}.py calls serdistill.data.storage; read features through FeatureRows"
