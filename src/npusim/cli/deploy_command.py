"""``npusim deploy MODEL``: a PyTorch model on the chip's arrays, its accuracy over drift time,
its fit and its energy bill."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from npusim.cli.chip_commands import add_after_option
from npusim.report.plot import after_drift_png
from npusim.runtime.device import DEVICES


def add_deploy_args(p: argparse.ArgumentParser) -> None:
    """Deploy a PyTorch model on the chip: accuracy after drift, fit and energy per inference."""
    p.add_argument(
        "model",
        help="built-in mlp or lenet5, a TorchScript / torch.save'd module, or file.py:factory",
    )
    p.add_argument("--chip", default="pcm", help="chip preset (ideal, rram, pcm, ecram) or .toml")
    add_after_option(p, ("1h", "1d", "1y"))
    p.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow unpickling a torch.save'd MODEL file (pickles can run code when loaded)",
    )
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "digits"))
    p.add_argument(
        "--epochs",
        type=int,
        help="digital training epochs (default: 30 for a built-in model, 0 for a loaded one)",
    )
    p.add_argument("--hwa-epochs", type=int, default=0, help="hardware-aware training epochs")
    p.add_argument(
        "--hwa-noise", type=float, default=1.0, help="injected noise scale in HWA training"
    )
    p.add_argument("--verify", type=int, default=0, help="program-and-verify iterations")
    p.add_argument("--repeats", type=int, default=10, help="programmings per time (mean ± s.d.)")
    p.add_argument("--noise", help="inference noise family (default: by chip: pcm, chip, ideal)")
    p.add_argument(
        "--digital-fallback", action="store_true", help="leave unsupported layers digital"
    )
    p.add_argument("--calibration", type=int, default=500, help="training samples for ranges")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    add_device_option(p, "the model, its tiles, noise and converters")
    p.add_argument("--out", type=Path, help="output folder (default runs/deploy-MODEL-CHIP)")


def add_device_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--device cpu|cuda|auto`` (random numbers are drawn on the CPU either way)."""
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help=f"where {what} run: cpu, cuda (the first CUDA GPU) or auto (cuda when available)",
    )


def run_deploy(a: argparse.Namespace) -> int:
    import torch

    from npusim.chip import load_chip
    from npusim.data import load_dataset
    from npusim.deploy import DeployError, deploy, fit_report
    from npusim.deploy.bill import inference_bill
    from npusim.deploy.hwa import drift_errors, error_rate, fit, hwa_train
    from npusim.deploy.models import is_conv, load_model, mlp
    from npusim.runtime.device import checked_device
    from npusim.runtime.io import atomic_json
    from npusim.runtime.threads import apply_default_threads

    if a.threads is not None and a.threads < 1:
        raise DeployError(f"--threads must be >= 1, got {a.threads}")
    apply_default_threads(a.threads)
    for name in ("repeats", "calibration"):
        if getattr(a, name) < 1:
            raise DeployError(f"--{name} must be >= 1, got {getattr(a, name)}")
    device = checked_device(getattr(a, "device", "cpu"), DeployError)
    chip = load_chip(a.chip)
    out = a.out or Path("runs") / f"deploy-{Path(a.model).stem}-{chip.name}"
    if (out / "deploy.json").exists():
        raise DeployError(f"{out / 'deploy.json'} exists; choose another --out")
    data = load_dataset(a.dataset)
    torch.manual_seed(a.seed)
    if a.model == "mlp":
        model, built_in = mlp(inputs=data.num_features), True
    else:
        model, built_in = load_model(a.model, trust_pickle=a.trust_model_file)
    conv = is_conv(model)
    model.to(device)  # built and initialised on the CPU, as without --device
    c, h, w = data.chw

    def shape(x: torch.Tensor) -> torch.Tensor:
        return (x.view(-1, c, h, w) if conv else x).to(device)

    x_tr, x_te = shape(data.x_train), shape(data.x_test)
    y_tr, y_te = data.y_train.to(device), data.y_test.to(device)
    t0 = time.perf_counter()
    epochs = a.epochs if a.epochs is not None else (30 if built_in else 0)
    try:
        model(x_tr[:2])
    except Exception as e:  # noqa: BLE001 - a model that cannot take the data is one error
        raise DeployError(
            f"MODEL {a.model} cannot run on {a.dataset} inputs of shape "
            f"{tuple(x_tr[:2].shape)}: {e}"
        ) from None
    if epochs > 0:
        fit(model, x_tr, y_tr, epochs, seed=a.seed)
    model.eval()
    digital = error_rate(model, x_te, y_te)
    analog = deploy(
        model,
        chip,
        noise=a.noise,
        calibration=x_tr[: a.calibration],
        digital_fallback=a.digital_fallback,
        seed=a.seed,
        verify_iterations=a.verify,
    )
    if a.hwa_epochs > 0:
        hwa_train(analog, x_tr, y_tr, a.hwa_epochs, seed=a.seed, noise_scale=a.hwa_noise)
    times = dict(a.after)
    after = drift_errors(analog, x_te, y_te, times, repeats=a.repeats, seed=a.seed)
    fitrep = fit_report(analog, chip)
    bill = inference_bill(analog, chip, x_te[:1])
    bill_rep = inference_bill(analog, chip, x_te[:1], replicate=True)
    result = {
        "model": a.model,
        "chip": chip.name,
        "dataset": a.dataset,
        "digital_epochs": epochs,
        "hwa_epochs": a.hwa_epochs,
        "hwa_noise": a.hwa_noise,
        "verify_iterations": a.verify,
        "repeats": a.repeats,
        "seed": a.seed,
        "device": str(device),  # where it ran (auto resolved)
        "digital_test_error": digital,
        "after": after,
        "after_seconds": times,
        "fit": {**fitrep.as_dict(), "area_m2": bill["total_area_m2"]},
        "energy": bill,
        "energy_replicated": bill_rep,
        "seconds": time.perf_counter() - t0,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(result, out / "deploy.json")
    pct = {k: {"mean": 100 * v["mean"], "std": 100 * v["std"]} for k, v in result["after"].items()}
    after_drift_png(
        pct,
        result["after_seconds"],
        out / "deploy.png",
        digital=100 * result["digital_test_error"],
        margin=0.5,
        margin_label="digital + 0.5 pt",
        ylabel="test error (%)",
        label=f"{result['chip']} chip",
        title=f"{result['model']} on {result['chip']} ({result['dataset']})",
    )
    print(f"digital test error {100 * digital:.2f}% ({a.model}, {a.dataset})")
    print(f"on {chip.name} (mean ± s.d. of {a.repeats} programmings):")
    for label, r in after.items():
        print(f"  after {label:>6}: {100 * r['mean']:.2f}% ± {100 * r['std']:.2f}%")
    print(
        f"fit: {fitrep.arrays} of {fitrep.available} arrays, utilisation "
        f"{100 * fitrep.utilisation:.1f}%, area {1e6 * bill['total_area_m2']:.3f} mm²"
    )
    for label, b in (("one copy of each layer", bill), ("conv arrays replicated", bill_rep)):
        print(
            f"energy per inference ({label}, {b['arrays']} arrays): "
            f"{1e9 * b['total_energy_j']:.1f} nJ, latency {1e6 * b['latency_s']:.2f} µs"
        )
    print(
        "baselines: "
        + ", ".join(f"{k} {1e9 * v['total_j']:.1f} nJ" for k, v in bill["baselines"].items())
    )

    print(f"wrote {out / 'deploy.json'} and {out / 'deploy.png'}")
    return 0
