"""The architecture holds: stages import one way (import-linter contracts in pyproject.toml),
the declared interfaces are implemented, and runtime, ledger and cost never probe objects."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from npusim.circuits import NETWORKS, make_network
from npusim.core.interfaces import Estimator, Network, Synapses
from npusim.devices import IdealSynapses, make_synapses
from npusim.learning import ESTIMATORS, make_estimator

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "npusim"


def test_import_contracts_hold() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    res = subprocess.run(
        [*cmd, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout


@pytest.mark.parametrize("folder", ["runtime", "cost"])
def test_no_feature_probing(folder: str) -> None:
    """No ``hasattr`` and no ``getattr`` with a default in runtime or cost: interfaces are
    declared, not discovered."""
    for path in (SRC / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                assert name != "hasattr", f"{path.name}:{node.lineno} probes with hasattr"
                assert not (name == "getattr" and len(node.args) == 3), (
                    f"{path.name}:{node.lineno} probes with getattr(..., default)"
                )


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_registered_networks_implement_the_protocol(name: str) -> None:
    net = make_network(name, [6, 4, 3], seed=0)
    assert isinstance(net, Network)
    assert net.logical_sizes[0] == 6 and net.logical_sizes[1:] == [4, 3]


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_registered_estimators_implement_the_protocol(name: str) -> None:
    assert isinstance(make_estimator(name, beta=0.1, variant="centered", sweeps=3), Estimator)


def test_synapses_implement_the_protocol() -> None:
    from npusim.chip import load_chip

    net = make_network("dhn", [6, 4, 3], seed=0)
    assert isinstance(IdealSynapses(net.params(), net.signed), Synapses)
    dev = make_synapses(load_chip("rram"), net.params(), net.signed, seed=0)
    assert isinstance(dev, Synapses)
