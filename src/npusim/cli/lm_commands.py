"""``npusim lm-train`` / ``generate`` / ``lm-eval``: a small character-level GPT on the chip.

The trained model lives in the model folder (``--model-dir``, default ``~/.cache/npusim/lm``,
see :func:`npusim.deploy.lm.train.model_dir`): ``CORPUS.pt`` (digital) and
``CORPUS-hwa-CHIP.pt`` (hardware-aware fine-tuned for a chip). ``generate`` and ``lm-eval``
train what is missing on first use (minutes) and say so.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from npusim.cli.chip_commands import add_after_option, labelled_duration
from npusim.cli.deploy_command import add_device_option
from npusim.cli.options import path_arg, positive_int
from npusim.report.plot import after_drift_png

if TYPE_CHECKING:
    import torch


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=path_arg, help="trained models (default ~/.cache/npusim/lm)")
    p.add_argument("--text", type=Path, help="a UTF-8 text file to learn instead of Shakespeare")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch")
    p.add_argument(
        "--hwa-steps", type=int, default=60, help="hardware-aware fine-tuning steps (0: none)"
    )
    p.add_argument("--hwa-noise", type=float, default=1.0, help="injected noise scale in HWA")
    add_device_option(p, "training, the deployed model and generation")


def add_lm_train_args(p: argparse.ArgumentParser) -> None:
    """Train the character-level GPT (digitally, then hardware-aware for --hwa chips)."""
    _common(p)
    p.add_argument("--steps", type=positive_int, default=400, help="digital training steps")
    p.add_argument("--batch", type=positive_int, default=16, help="windows per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--layers", type=positive_int, default=5, help="transformer blocks")
    p.add_argument("--embd", type=positive_int, default=128, help="features per position")
    p.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    p.add_argument("--block", type=positive_int, default=128, help="context length (chars)")
    p.add_argument("--hwa", nargs="*", default=[], metavar="CHIP", help="chips to fine-tune for")
    p.add_argument("--force", action="store_true", help="retrain even if a model exists")
    p.add_argument("--seed", type=int, default=0)


def add_generate_args(p: argparse.ArgumentParser) -> None:
    """Generate text with the GPT on the chip; tokens/s and energy per token vs NPU and H100."""
    _common(p)
    p.add_argument("--chip", default="pcm", help="chip preset (ideal, rram, pcm, ecram) or .toml")
    p.add_argument(
        "--after",
        type=labelled_duration,
        default=labelled_duration("1d"),
        metavar="TIME",
        help="time since programming, e.g. 1h, 1d, 1y (default 1d)",
    )
    p.add_argument("--prompt", default="ROMEO:\n", help="text to continue")
    p.add_argument("--tokens", type=positive_int, default=300, help="characters to generate")
    p.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature (0: greedy)"
    )
    p.add_argument("--top-k", type=positive_int, help="sample from the k likeliest characters")
    p.add_argument("--seed", type=int, default=0, help="programming and sampling seed")
    p.add_argument("--digital", action="store_true", help="run the digital model instead")
    p.add_argument("--no-hwa", action="store_true", help="deploy the digitally trained model")


def add_lm_eval_args(p: argparse.ArgumentParser) -> None:
    """Validation loss (nats/char) of the GPT, digital vs on a chip after drift; JSON and plot."""
    _common(p)
    p.add_argument("--chip", default="pcm", help="chip preset (ideal, rram, pcm, ecram) or .toml")
    add_after_option(p, ("1h", "1d", "1y"))
    p.add_argument("--repeats", type=positive_int, default=5, help="programmings per time")
    p.add_argument(
        "--eval-chars",
        type=positive_int,
        default=16384,
        help="validation characters (whole windows from the start of the split)",
    )
    p.add_argument("--no-hwa", action="store_true", help="deploy the digitally trained model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=path_arg, help="output folder (default runs/lm-eval-CHIP)")


def _note(text: str) -> None:
    print(f"npusim: {text}", file=sys.stderr, flush=True)


def _setup(a: argparse.Namespace):  # noqa: ANN202
    """(corpus, model folder, torch device); ``--device cuda`` without CUDA is one error."""
    from npusim.deploy.lm import CorpusError, load_corpus, model_dir
    from npusim.runtime.device import checked_device
    from npusim.runtime.threads import apply_default_threads

    device = checked_device(getattr(a, "device", "cpu"), CorpusError)
    apply_default_threads(a.threads)
    return load_corpus(a.text), model_dir(a.model_dir), device


def _loaded(path: Path, device: torch.device):  # noqa: ANN202
    """A saved model (loaded on the CPU) on ``device``, with its vocabulary and record."""
    from npusim.deploy.lm import load_model

    model, chars, record = load_model(path)
    return model.to(device), chars, record


def _digital(  # noqa: ANN202
    a: argparse.Namespace,
    corpus,  # noqa: ANN001
    folder: Path,
    device: torch.device,
    **shape: int,
):
    from npusim.deploy.lm import GPTConfig, TrainSettings, save_model, train_lm

    path = folder / f"{corpus.name}.pt"
    if path.exists() and not getattr(a, "force", False):
        return _loaded(path, device)
    _note(f"training the language model on {corpus.name} (once; kept in {path})")
    cfg = GPTConfig(vocab=len(corpus.chars), **shape)
    s = TrainSettings(
        steps=getattr(a, "steps", 400),
        batch=getattr(a, "batch", 16),
        lr=getattr(a, "lr", 2e-3),
        seed=getattr(a, "seed", 0),
    )
    t0 = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        if step % 50 == 0 or step == s.steps - 1:
            _note(
                f"  step {step + 1}/{s.steps}: loss {loss:.3f} ({time.perf_counter() - t0:.0f} s)"
            )

    model, record = train_lm(corpus, cfg, s, progress=progress, device=device)
    save_model(model, corpus.chars, record, path)
    _note(f"  validation loss {record['val_loss']:.3f} nats/char; saved {path}")
    return model, corpus.chars, record


def _hwa(a: argparse.Namespace, corpus, folder: Path, model, chip):  # noqa: ANN001, ANN202
    from npusim.deploy.lm import TrainSettings, hwa_finetune, save_model
    from npusim.deploy.lm.model import device_of
    from npusim.deploy.lm.train import HWA_SETTINGS

    path = folder / f"{corpus.name}-hwa-{chip.name}.pt"
    if path.exists() and not getattr(a, "force", False):
        return _loaded(path, device_of(model))
    if a.hwa_steps < 1 or chip.device.model == "ideal":  # nothing to adapt to
        return model, corpus.chars, {}
    _note(f"hardware-aware fine-tuning for {chip.name}, {a.hwa_steps} steps (kept in {path})")
    s = TrainSettings(**{**HWA_SETTINGS, "steps": a.hwa_steps}, seed=getattr(a, "seed", 0))
    tuned, record = hwa_finetune(model, corpus, chip, s, noise_scale=a.hwa_noise)
    save_model(tuned, corpus.chars, record, path)
    return tuned, corpus.chars, record


def _check_vocab(corpus, chars: str, folder: Path) -> None:  # noqa: ANN001
    from npusim.deploy.lm import CorpusError

    if chars != corpus.chars:
        raise CorpusError(
            f"the model in {folder} was trained on another text (vocabulary differs); "
            f"use another --model-dir or retrain with 'npusim lm-train --force'"
        )


def run_lm_train(a: argparse.Namespace) -> int:
    from npusim.chip import load_chip

    corpus, folder, device = _setup(a)
    shape = {"n_layer": a.layers, "n_embd": a.embd, "n_head": a.heads, "block": a.block}
    if a.embd % a.heads:
        from npusim.deploy.lm import CorpusError

        raise CorpusError(f"--embd {a.embd} must be a multiple of --heads {a.heads}")
    model, chars, record = _digital(a, corpus, folder, device, **shape)
    _check_vocab(corpus, chars, folder)
    print(
        f"digital model: {model.num_params():,} parameters, validation loss "
        f"{record.get('val_loss', float('nan')):.3f} nats/char ({folder / (corpus.name + '.pt')})"
    )
    for name in a.hwa:
        chip = load_chip(name)
        _, _, rec = _hwa(a, corpus, folder, model, chip)
        print(
            f"hardware-aware for {chip.name}: train loss {rec.get('train_loss_first', 0):.3f} -> "
            f"{rec.get('train_loss_last', 0):.3f} in {rec.get('seconds', 0):.0f} s"
        )
    return 0


def _deployed(  # noqa: ANN202
    a: argparse.Namespace,
    corpus,  # noqa: ANN001
    folder: Path,
    chip,  # noqa: ANN001
    device: torch.device,
):
    from npusim.deploy.lm.analog import calibration_windows, deploy_lm

    digital, chars, record = _digital(a, corpus, folder, device)
    _check_vocab(corpus, chars, folder)
    model = digital if a.no_hwa else _hwa(a, corpus, folder, digital, chip)[0]
    calib = calibration_windows(corpus.encode(corpus.train), model.cfg.block, seed=a.seed)
    return digital, record, model, deploy_lm(model, chip, calib, seed=a.seed)


def run_generate(a: argparse.Namespace) -> int:
    import torch

    from npusim.chip import load_chip
    from npusim.deploy import set_time
    from npusim.deploy.lm import CorpusError, freeze, generate, run_bill
    from npusim.deploy.lm.analog import arrays_used

    if a.temperature < 0:
        raise CorpusError(f"--temperature must be >= 0, got {a.temperature}")
    corpus, folder, device = _setup(a)
    chip = load_chip(a.chip)
    label, t = a.after
    digital, _, _, analog = _deployed(a, corpus, folder, chip, device)
    set_time(analog, t)
    runner = digital if a.digital else freeze(analog)
    prompt = corpus.encode(a.prompt)
    where = "digital model" if a.digital else f"{chip.name}, {label} after programming"
    print(f"[{where}]", flush=True)
    sys.stdout.write(a.prompt)

    def emit(i: int) -> None:
        sys.stdout.write(corpus.chars[i])
        sys.stdout.flush()

    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    out, positions = generate(
        runner,
        prompt,
        a.tokens,
        temperature=a.temperature,
        top_k=a.top_k,
        seed=a.seed,
        on_token=emit,
    )
    dt = time.perf_counter() - t0
    n = len(out)
    bill = run_bill(analog, chip, positions)
    e, lat = bill["total_energy_j"] / n, bill["latency_s"] / n
    what = "digital torch" if a.digital else "simulated, every non-ideality on"
    where = "one thread" if device.type == "cpu" else f"on {device}"
    print(f"\n\n{n} characters in {dt:.2f} s: {n / dt:.0f} tokens/s ({what}; {where})")
    print(
        f"per generated token ({len(positions)} forward positions incl. the prompt; "
        f"{arrays_used(analog)} arrays):"
    )
    print(f"  {chip.name:<28} {1e9 * e:9.1f} nJ  {1e6 * lat:8.3f} µs")
    for name, b in bill["baselines"].items():
        print(f"  {name:<28} {1e9 * b['energy_j'] / n:9.1f} nJ  {1e6 * b['time_s'] / n:8.3f} µs")
    terms = ", ".join(f"{k} {1e9 * v / n:.1f}" for k, v in bill["energy_j"].items())
    print(f"  {chip.name} terms (nJ/token): {terms}")
    return 0


def run_lm_eval(a: argparse.Namespace) -> int:
    from npusim.chip import load_chip
    from npusim.deploy.lm import CorpusError, loss_after, loss_on, token_bill
    from npusim.deploy.lm.analog import arrays_used
    from npusim.deploy.lm.train import windows
    from npusim.runtime.io import atomic_json

    corpus, folder, device = _setup(a)
    chip = load_chip(a.chip)
    out = a.out or Path("runs") / f"lm-eval-{chip.name}"
    if (out / "lm_eval.json").exists():
        raise CorpusError(f"{out / 'lm_eval.json'} exists; choose another --out")
    t0 = time.perf_counter()
    digital, record, model, analog = _deployed(a, corpus, folder, chip, device)
    tuned = model is not digital
    x, y = windows(corpus.encode(corpus.val), digital.cfg.block, a.eval_chars)
    d_loss = loss_on(digital, x, y)
    m_loss = loss_on(model, x, y)
    times = dict(a.after)
    after = loss_after(analog, x, y, times, a.repeats, seed=a.seed)
    block = digital.cfg.block
    bills = {str(t): token_bill(analog, chip, t) for t in sorted({1, block // 2, block})}
    result = {
        "chip": chip.name,
        "corpus": corpus.name,
        "model": {**digital.cfg.as_dict(), "params": digital.num_params()},
        "training": record,
        "hwa": tuned,
        "hwa_steps": a.hwa_steps if tuned else 0,
        "eval_chars": int(x.numel()),
        "repeats": a.repeats,
        "seed": a.seed,
        "device": str(device),  # where it ran (auto resolved)
        "digital_val_loss": d_loss,
        "digital_perplexity": math.exp(d_loss),
        "deployed_model_digital_val_loss": m_loss,
        "after": after,
        "after_seconds": times,
        "arrays": arrays_used(analog),
        "energy_per_token": bills,
        "seconds": time.perf_counter() - t0,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(result, out / "lm_eval.json")
    after_drift_png(
        result["after"],
        result["after_seconds"],
        out / "lm_eval.png",
        digital=result["digital_val_loss"],
        margin=0.1,
        margin_label="digital + 0.1",
        ylabel="validation loss (nats/char)",
        label=f"{result['chip']} chip",
        title=f"char GPT on {result['chip']} ({result['corpus']})",
    )
    print(
        f"digital validation loss {d_loss:.3f} nats/char "
        f"(perplexity {result['digital_perplexity']:.2f})"
    )
    kind = "hardware-aware weights" if tuned else "digital weights"
    print(f"on {chip.name} ({kind}, mean ± s.d. of {a.repeats} programmings):")
    for label, r in after.items():
        print(
            f"  after {label:>6}: {r['mean']:.3f} ± {r['std']:.3f} nats/char "
            f"(+{r['mean'] - d_loss:.3f}; perplexity {r['perplexity']:.2f})"
        )
    print(f"wrote {out / 'lm_eval.json'} and {out / 'lm_eval.png'}")
    return 0
