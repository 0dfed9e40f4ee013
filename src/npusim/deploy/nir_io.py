"""NIR interop (https://neuroir.org, pip ``nir``): models out to NIR graphs and back.

A sequential model (digital or deployed) becomes a chain ``Input → … → Output`` of NIR
primitives: ``Linear``/analog linear → ``Affine`` (W: out × in, b), ``Conv2d``/analog conv →
``Conv2d``, ``Flatten`` → ``Flatten``, ``AvgPool2d`` → ``AvgPool2d``. NIR has no node for a
static nonlinearity, so an activation is **recorded in the metadata of the node it follows**
(``npusim.activation``: ``relu``, ``hard_sigmoid`` = clip(x, 0, 1), ``tanh``, ``sigmoid``)
and re-inserted when the graph is read back. An analog layer's node also records its chip
(``npusim.chip``) and noise family.

npusim's deep Hopfield network (:class:`npusim.circuits.DeepHopfield`) is exported as its
couplings: ``Affine`` nodes with ``W_kᵀ`` and ``b_k`` and the hard-sigmoid recorded as above,
with ``npusim.network = "DeepHopfield"`` in the graph's metadata. That chain is the network's
weights, not its dynamics: at inference its layers settle to the energy minimum with feedback
through ``W_k`` from the layer above, which NIR's feed-forward primitives do not express
(stated in ``npusim.note``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from npusim.deploy.layers import AnalogConv2d, AnalogLinear
from npusim.deploy.noise import DeployError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
DHN_NOTE = (
    "energy-based network: these Affine nodes are its couplings W_k^T and biases; at inference "
    "the layers settle to the minimum of E(s) = sum 1/2|s_k|^2 - s_k^T W_k s_k+1 - b_k^T s_k+1 "
    "with every unit in [0, 1] (feedback from the layer above), which NIR does not express"
)


def _nir():  # noqa: ANN202
    try:
        import nir
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise DeployError("NIR export needs the nir package: pip install 'npusim[nir]'") from e
    return nir


def _activation_name(m: nn.Module) -> str | None:
    if isinstance(m, nn.ReLU):
        return "relu"
    if isinstance(m, nn.Hardtanh) and m.min_val == 0.0 and m.max_val == 1.0:
        return "hard_sigmoid"
    if isinstance(m, nn.Tanh):
        return "tanh"
    if isinstance(m, nn.Sigmoid):
        return "sigmoid"
    return None


def _leaves(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _leaves(child)]
    return [model]


def _np(t: torch.Tensor | None, n: int) -> np.ndarray:
    if t is None:
        return np.zeros(n, dtype=np.float32)
    return t.detach().cpu().float().numpy().copy()


def to_nir(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """NIR graph of a sequential ``model`` taking one sample of ``input_shape`` (no batch)."""
    nir = _nir()
    leaves = _leaves(model)
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, k=k: shapes.__setitem__(k, tuple(i[0].shape[1:])))
        for k, m in enumerate(leaves)
    ]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()(torch.zeros(1, *input_shape))
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
    nodes: list[Any] = []
    for k, m in enumerate(leaves):
        act = _activation_name(m)
        if act is not None:
            if not nodes:
                raise DeployError(f"NIR export: activation {act} before any layer")
            nodes[-1].metadata["npusim.activation"] = act
            continue
        meta: dict[str, Any] = {}
        if isinstance(m, (AnalogLinear, AnalogConv2d)):
            meta = {"npusim.chip": m.settings.chip.name, "npusim.noise": m.settings.noise.name}
        if isinstance(m, (nn.Linear, AnalogLinear)):
            w = m.weight.detach().cpu().float().numpy().copy()
            nodes.append(nir.Affine(weight=w, bias=_np(m.bias, w.shape[0]), metadata=meta))
        elif isinstance(m, (nn.Conv2d, AnalogConv2d)):
            out_ch = m.out_channels
            w = (
                m.weight.detach()
                .cpu()
                .float()
                .numpy()
                .reshape(out_ch, m.in_channels, *m.kernel_size)
            )
            nodes.append(
                nir.Conv2d(
                    input_shape=tuple(shapes[k][-2:]),
                    weight=w.copy(),
                    stride=tuple(m.stride),
                    padding=tuple(m.padding),
                    dilation=tuple(m.dilation),
                    groups=1,
                    bias=_np(m.bias, out_ch),
                    metadata=meta,
                )
            )
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise DeployError("NIR export: only Flatten(start_dim=1, end_dim=-1)")
            nodes.append(nir.Flatten(input_type={"input": np.array(shapes[k])}, start_dim=0))
        elif isinstance(m, nn.AvgPool2d):
            pair = nn.modules.utils._pair
            nodes.append(
                nir.AvgPool2d(
                    kernel_size=np.array(pair(m.kernel_size)),
                    stride=np.array(pair(m.stride or m.kernel_size)),
                    padding=np.array(pair(m.padding)),
                )
            )
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        else:
            raise DeployError(
                f"NIR export: no NIR node for {type(m).__name__} (Affine, Conv2d, Flatten, "
                f"AvgPool2d and activations in metadata are supported)"
            )
    graph = nir.NIRGraph.from_list(*nodes, type_check=False)
    graph.nodes["input"] = nir.Input(input_type={"input": np.array(input_shape)})
    return graph


def _chain(graph: Any) -> list[Any]:
    nxt = dict(graph.edges)
    if len(nxt) != len(graph.edges):
        raise DeployError("NIR import: only chains (one edge out of each node) are supported")
    starts = [n for n, node in graph.nodes.items() if type(node).__name__ == "Input"]
    if len(starts) != 1:
        raise DeployError("NIR import: the graph needs exactly one Input node")
    out, name = [], nxt.get(starts[0])
    while name is not None and type(graph.nodes[name]).__name__ != "Output":
        out.append(graph.nodes[name])
        name = nxt.get(name)
        if len(out) > len(graph.nodes):
            raise DeployError("NIR import: the graph has a cycle")
    return out


def from_nir(graph: Any) -> nn.Sequential:
    """A digital ``nn.Sequential`` from a NIR chain of Affine, Linear, Conv2d, Flatten and
    AvgPool2d nodes (activations from ``npusim.activation`` metadata); deploy it again with
    :func:`npusim.deploy.deploy`."""
    nir = _nir()
    layers: list[nn.Module] = []
    for node in _chain(graph):
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32))
            has_b = isinstance(node, nir.Affine)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=has_b)
            with torch.no_grad():
                lin.weight.copy_(w)
                if has_b:
                    lin.bias.copy_(torch.from_numpy(np.asarray(node.bias, dtype=np.float32)))
            layers.append(lin)
        elif isinstance(node, nir.Conv2d):
            w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32))
            if node.groups != 1 or isinstance(node.padding, str):
                raise DeployError("NIR import: Conv2d with groups 1 and numeric padding only")
            conv = nn.Conv2d(
                w.shape[1],
                w.shape[0],
                tuple(w.shape[2:]),
                tuple(np.atleast_1d(node.stride).tolist()) * (2 // np.size(node.stride)),
                tuple(np.atleast_1d(node.padding).tolist()) * (2 // np.size(node.padding)),
                tuple(np.atleast_1d(node.dilation).tolist()) * (2 // np.size(node.dilation)),
            )
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(torch.from_numpy(np.asarray(node.bias, dtype=np.float32)))
            layers.append(conv)
        elif isinstance(node, nir.Flatten):
            layers.append(nn.Flatten())
        elif isinstance(node, nir.AvgPool2d):
            k = tuple(int(v) for v in np.atleast_1d(node.kernel_size))
            s = tuple(int(v) for v in np.atleast_1d(node.stride))
            p = tuple(int(v) for v in np.atleast_1d(node.padding))
            layers.append(nn.AvgPool2d(k, s, p))
        else:
            raise DeployError(f"NIR import: no npusim layer for a {type(node).__name__} node")
        act = node.metadata.get("npusim.activation")
        if act == "hard_sigmoid":
            layers.append(nn.Hardtanh(0.0, 1.0))
        elif act in ACTIVATIONS:
            layers.append(ACTIVATIONS[act]())
        elif act is not None:
            raise DeployError(f"NIR import: unknown npusim.activation {act!r}")
    return nn.Sequential(*layers)


def dhn_to_nir(net: Any) -> Any:
    """NIR graph of a :class:`npusim.circuits.DeepHopfield`'s couplings (see module doc)."""
    nir = _nir()
    nodes = []
    for w, b in zip(net.weights, net.biases):
        meta = {"npusim.activation": "hard_sigmoid", "npusim.activation_equation": "clip(x, 0, 1)"}
        nodes.append(
            nir.Affine(
                weight=w.detach().cpu().float().numpy().T.copy(),
                bias=b.detach().cpu().float().numpy().copy(),
                metadata=meta,
            )
        )
    graph = nir.NIRGraph.from_list(*nodes, type_check=False)
    graph.metadata = {"npusim.network": "DeepHopfield", "npusim.note": DHN_NOTE}
    return graph


def dhn_from_nir(graph: Any) -> Any:
    """A :class:`npusim.circuits.DeepHopfield` with the couplings of a graph from
    :func:`dhn_to_nir` (Affine chain; weights ``W_k = Aᵀ``)."""
    from npusim.circuits import DeepHopfield

    nodes = _chain(graph)
    ws = [torch.from_numpy(np.asarray(n.weight, dtype=np.float32)).t().contiguous() for n in nodes]
    sizes = [ws[0].shape[0]] + [w.shape[1] for w in ws]
    net = DeepHopfield(sizes)
    net.weights = ws
    net.biases = [torch.from_numpy(np.asarray(n.bias, dtype=np.float32)).clone() for n in nodes]
    return net
