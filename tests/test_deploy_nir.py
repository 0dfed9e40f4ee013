"""NIR round trips: a deployed LeNet-5 and a deep Hopfield network out to a NIR file and back."""

from __future__ import annotations

import pytest
import torch

from npusim.chip import load_chip
from npusim.circuits import DeepHopfield
from npusim.deploy import DeployError, deploy
from npusim.deploy.models import lenet5
from npusim.deploy.nir_io import dhn_from_nir, dhn_to_nir, from_nir, to_nir

nir = pytest.importorskip("nir")


def test_deployed_lenet5_round_trips_through_a_nir_file(tmp_path):
    torch.manual_seed(0)
    model = lenet5().eval()
    analog = deploy(model, load_chip("pcm"))
    graph = to_nir(analog, (1, 28, 28))
    kinds = [type(graph.nodes[b]).__name__ for _, b in graph.edges]
    assert kinds == [
        "Conv2d", "AvgPool2d", "Conv2d", "AvgPool2d", "Flatten",
        "Affine", "Affine", "Affine", "Output",
    ]  # fmt: skip
    assert graph.nodes["conv2d"].metadata["npusim.activation"] == "relu"
    assert graph.nodes["conv2d"].metadata["npusim.chip"] == "pcm"
    nir.write(tmp_path / "lenet5.nir", graph)
    back = from_nir(nir.read(tmp_path / "lenet5.nir"))
    assert [type(m) for m in back] == [type(m) for m in model]
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_deep_hopfield_round_trips_with_its_hard_sigmoid_recorded(tmp_path):
    net = DeepHopfield([784, 32, 16, 10], seed=3)
    net.biases = [torch.randn(n) for n in (32, 16, 10)]
    graph = dhn_to_nir(net)
    assert graph.metadata["npusim.network"] == "DeepHopfield"
    nir.write(tmp_path / "dhn.nir", graph)
    read = nir.read(tmp_path / "dhn.nir")
    acts = {read.nodes[n].metadata.get("npusim.activation") for n in read.nodes if "affine" in n}
    assert acts == {"hard_sigmoid"}
    back = dhn_from_nir(read)
    assert back.sizes == net.sizes
    for a, b in zip(net.weights + net.biases, back.weights + back.biases):
        assert torch.equal(a, b)


def test_unsupported_module_is_refused():
    with pytest.raises(DeployError, match="no NIR node for LSTM"):
        to_nir(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LSTM(3, 3)), (3,))
