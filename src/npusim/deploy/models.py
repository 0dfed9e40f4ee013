"""Built-in example models and loading a user's model (``npusim deploy MODEL``).

MODEL is ``mlp`` or ``lenet5`` (built in), a TorchScript file, a ``torch.save``d module, or
``file.py:factory`` (a function returning an ``nn.Module``).
"""

from __future__ import annotations

import importlib.util
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from npusim.deploy.noise import DeployError


def mlp(inputs: int = 784, hidden: tuple[int, ...] = (256, 128), classes: int = 10) -> nn.Module:
    """A ReLU MLP on flat inputs: inputs-256-128-10 by default."""
    layers: list[nn.Module] = []
    sizes = [inputs, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], classes))


def lenet5(classes: int = 10, side: int = 28) -> nn.Module:
    """LeNet-5 (LeCun et al., Proc. IEEE 86, 2278 (1998)) on 1×side×side images: conv 5×5 → 6
    (padding 2), average pooling 2, conv 5×5 → 16, average pooling 2, 120-84-classes; ReLU
    activations (the original's scaled tanh replaced, as is common)."""
    s = ((side + 4 - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * s * s, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, classes),
    )


BUILTIN = {"mlp": mlp, "lenet5": lenet5}


def is_conv(model: nn.Module) -> bool:
    """True when the model's first weight layer is a Conv2d (it takes images, not vectors)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return True
        if isinstance(m, nn.Linear):
            return False
    return False


def load_model(spec: str, trust_pickle: bool = False) -> tuple[nn.Module, bool]:
    """(model, built_in) for a MODEL argument; raises :class:`DeployError` when the file is
    not a model. A ``torch.save``d module is a pickle, which can run code while it loads: it
    is unpickled only with ``trust_pickle`` (``--trust-model-file``); everything else loads
    without running code from the file (TorchScript, or ``weights_only``)."""
    if spec in BUILTIN:
        return BUILTIN[spec](), True
    path_s, _, factory = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
    if factory and path_s.endswith(".py"):
        return _from_factory(Path(path_s), factory), False
    path = Path(spec)
    if not path.is_file():
        raise DeployError(
            f"MODEL {spec!r}: not a built-in model ({', '.join(BUILTIN)}), a file, or "
            f"file.py:factory"
        )
    if zipfile.is_zipfile(path):
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading
                warnings.simplefilter("ignore", DeprecationWarning)
                m = torch.jit.load(str(path))
        except (RuntimeError, ValueError):
            pass
        else:
            return _unscript(m, spec), False
    try:
        obj = torch.load(str(path), weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        if "Unsupported global" not in str(e):  # not a pickle of classes: not a model
            raise DeployError(
                f"MODEL {spec!r} is not a TorchScript or torch.save'd module "
                f"({e.__class__.__name__})"
            ) from None
        if not trust_pickle:  # a pickled module: loading it runs code from the file
            raise DeployError(
                f"MODEL {spec!r} is a pickled module, and unpickling it can run code from the "
                "file; pass --trust-model-file if you trust it, or give a TorchScript file or "
                "file.py:factory"
            ) from None
        obj = torch.load(str(path), weights_only=False)
    if not isinstance(obj, nn.Module):
        raise DeployError(
            f"MODEL {spec!r} holds a {type(obj).__name__}, not an nn.Module (save the module "
            f"itself with torch.save(model, path), or give file.py:factory)"
        )
    return obj, False


def _from_factory(path: Path, factory: str) -> nn.Module:
    if not path.is_file():
        raise DeployError(f"MODEL {path}:{factory}: no such file {path}")
    spec = importlib.util.spec_from_file_location(f"npusim_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise DeployError(f"MODEL {path}: cannot import it as Python")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's file failing to import is one error
        raise DeployError(f"MODEL {path}: importing it failed: {e}") from None
    fn = getattr(mod, factory, None)
    if not callable(fn):
        raise DeployError(f"MODEL {path}:{factory}: {path} has no function {factory!r}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise DeployError(
            f"MODEL {path}:{factory} returned {type(model).__name__}, not an nn.Module"
        )
    return model


_SCRIPTED = {
    "Linear": lambda m: _copy(nn.Linear(m.in_features, m.out_features, bias=m.bias is not None), m),
    "ReLU": lambda m: nn.ReLU(),
    "Flatten": lambda m: nn.Flatten(),
    "Tanh": lambda m: nn.Tanh(),
    "Sigmoid": lambda m: nn.Sigmoid(),
    "Hardtanh": lambda m: nn.Hardtanh(float(m.min_val), float(m.max_val)),
    "AvgPool2d": lambda m: nn.AvgPool2d(m.kernel_size, m.stride, m.padding),
    "MaxPool2d": lambda m: nn.MaxPool2d(m.kernel_size, m.stride, m.padding),
    "Dropout": lambda m: nn.Dropout(),
}


def _copy(dst: nn.Module, src: nn.Module) -> nn.Module:
    dst.load_state_dict({k: v.clone() for k, v in src.state_dict().items()})
    return dst


def _unscript(m: torch.jit.ScriptModule, spec: str) -> nn.Module:
    """A TorchScript ``nn.Sequential`` of known layers rebuilt as Python modules (its code is
    compiled and cannot be rewired); other TorchScript graphs are refused."""
    name = getattr(m, "original_name", "")
    if name != "Sequential":
        raise DeployError(
            f"MODEL {spec!r}: TorchScript {name or 'module'} cannot be rewired onto the chip; "
            f"only a scripted nn.Sequential of Linear/Conv2d/activation layers can (or give "
            f"the torch.save'd module or file.py:factory)"
        )
    layers = []
    for child_name, child in m.named_children():
        kind = getattr(child, "original_name", "")
        if kind == "Conv2d":
            w = child.weight
            conv = nn.Conv2d(
                w.shape[1],
                w.shape[0],
                tuple(w.shape[2:]),
                child.stride,
                child.padding,
                child.dilation,
                bias=child.bias is not None,
            )
            layers.append(_copy(conv, child))
        elif kind in _SCRIPTED:
            layers.append(_SCRIPTED[kind](child))
        else:
            raise DeployError(
                f"MODEL {spec!r}: layer '{child_name}' ({kind}) of the TorchScript module has "
                f"no Python rebuild; give the torch.save'd module or file.py:factory"
            )
    return nn.Sequential(*layers)
