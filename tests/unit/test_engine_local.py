"""The engine abstraction without a cluster: the local engine, and the error when Ray is missing."""
from __future__ import annotations

import sys

import pytest

from serdistill.engine import EngineError, LocalEngine, get_engine
from serdistill.errors import SerdistillError


def test_the_local_engine_maps_in_input_order_with_shared_arguments():
    with get_engine("local", workers=1) as engine:
        assert isinstance(engine, LocalEngine)
        assert engine.map(round, [1.26, 2.71, -0.55], shared={"ndigits": 1}) == [1.3, 2.7, -0.6]
        assert engine.map(abs, []) == []


def test_a_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    with pytest.raises(EngineError, match=r"pip install 'serdistill\[ray\]'") as info:
        get_engine("ray")
    assert isinstance(info.value, SerdistillError)


def test_the_commands_report_a_missing_ray_clearly(monkeypatch, tmp_path):
    from clirun import run_cli

    monkeypatch.setitem(sys.modules, "ray", None)
    manifest = tmp_path / "m.csv"
    (tmp_path / "a.wav").touch()
    manifest.write_text("file,speaker,split,arousal,valence,dominance\na.wav,s,train,4,4,4\n")
    code, _, err = run_cli(["extract", str(manifest), "-o", str(tmp_path / "f.parquet"), "--engine", "ray"])
    assert code != 0
    assert "serdistill[ray]" in err


@pytest.mark.parametrize("address", ["127.0.0.1:1", "nonsense"])
def test_an_unreachable_ray_address_fails_at_once_and_says_why(address):
    pytest.importorskip("ray")
    with pytest.raises(EngineError, match="Ray") as info:
        get_engine("ray", address=address)
    assert address in str(info.value)
