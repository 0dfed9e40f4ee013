"""Training the language model: digitally, then hardware-aware with the chip in the loop.

Digital training follows nanoGPT's character-level Shakespeare recipe (karpathy/nanoGPT,
``config/train_shakespeare_char.py``): AdamW with betas (0.9, 0.99), weight decay 0.1 on the
matrices, a linear warm-up then a cosine decay to a tenth of the peak rate, gradients clipped
at norm 1, random windows of ``block`` characters. Hardware-aware fine-tuning runs the same
loop on the deployed model in training mode: each forward pass of every analog layer sees a
fresh programming drifted to a random time (log-uniform, t0 to a year), its read noise, IR
drop, output noise and DAC/ADC roundings, with straight-through gradients to the digital
weights (:class:`npusim.deploy.layers.AnalogMatrix`; Joshi et al., Nat. Commun. 11, 2473
(2020); Rasch et al., Nat. Commun. 14, 5282 (2023)).

Trained models are kept as ``.pt`` files (config, vocabulary, weights, training record),
written atomically, by default in the user's cache folder (:func:`model_dir`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from npusim.chip.spec import ChipSpec
from npusim.deploy.convert import deploy, undeploy
from npusim.deploy.layers import analog_layers, program
from npusim.deploy.lm.corpus import Corpus, CorpusError, corpus_version
from npusim.deploy.lm.model import GPT, GPTConfig, device_of
from npusim.runtime.io import atomic_torch_save


@dataclass
class TrainSettings:
    """One training run: ``steps`` of ``batch`` windows; peak ``lr`` after ``warmup`` steps,
    cosine to ``lr/10``; ``weight_decay`` on matrices; ``seed`` draws the windows and the
    initial weights. Defaults: nanoGPT's shakespeare_char recipe (AdamW, wd 0.1, clip 1,
    cosine to lr/10), scaled to a 2-core CPU: 400 of its 5000 steps, a quarter of its batch
    (16 windows, not 64) of half its length (128, not 256), twice its rate (1e-3)."""

    steps: int = 400
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0


#: hardware-aware fine-tuning from the digital model: steps, peak rate, warm-up. A design
#: choice measured on pcm (1 d after programming: gap to digital 0.041 nats/char without, 0.017
#: with; docs/lm_section.md); a quarter of the digital peak rate, as fine-tuning starts from
#: trained weights (Rasch et al., Nat. Commun. 14, 5282 (2023), fine-tune HWA from a
#: pre-trained model at a reduced rate).
HWA_SETTINGS = {"steps": 60, "batch": 16, "lr": 5e-4, "warmup": 10}


def model_dir(path: str | Path | None = None) -> Path:
    """Where trained models live: ``path``, else ``$NPUSIM_CACHE/lm``, else
    ``$XDG_CACHE_HOME/npusim/lm`` (default ``~/.cache/npusim/lm``)."""
    if path is not None:
        return Path(path)
    if os.environ.get("NPUSIM_CACHE"):
        return Path(os.environ["NPUSIM_CACHE"]) / "lm"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "npusim" / "lm"


def batches(ids: Tensor, block: int, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` random windows of ``block`` characters (inputs) and the next characters."""
    if ids.numel() <= block + 1:
        raise CorpusError(f"the text has {ids.numel()} characters; it needs more than {block + 1}")
    start = torch.randint(0, ids.numel() - block - 1, (batch,), generator=gen)
    offs = start[:, None] + torch.arange(block)
    return ids[offs], ids[offs + 1]


def windows(ids: Tensor, block: int, max_chars: int | None = None) -> tuple[Tensor, Tensor]:
    """Consecutive non-overlapping windows over ``ids`` (at most ``max_chars`` characters):
    the fixed evaluation set."""
    n = (ids.numel() - 1) // block
    if max_chars is not None:
        n = min(n, max(1, max_chars // block))
    if n < 1:
        raise CorpusError(f"the validation text has {ids.numel()} characters; it needs > {block}")
    x = ids[: n * block].view(n, block)
    y = ids[1 : n * block + 1].view(n, block)
    return x, y


@torch.no_grad()
def loss_on(model: nn.Module, x: Tensor, y: Tensor, batch: int = 16) -> float:
    """Mean cross-entropy (nats per character) of ``model`` over windows ``x`` -> ``y``
    (moved to the model's device batch by batch)."""
    model.eval()
    dev = device_of(model)
    total, n = 0.0, 0
    for lo in range(0, x.shape[0], batch):
        logits = model(x[lo : lo + batch].to(dev))
        yb = y[lo : lo + batch].to(dev)
        total += float(F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum"))
        n += y[lo : lo + batch].numel()
    return total / n


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.99))


def _lr(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr / 10 + 0.5 * (s.lr - s.lr / 10) * (1 + math.cos(math.pi * min(frac, 1.0)))


def fit_lm(
    model: nn.Module,
    train_ids: Tensor,
    s: TrainSettings,
    *,
    progress=None,  # noqa: ANN001 - callable(step, loss) or None
) -> list[float]:
    """Train ``model`` (digital, or deployed in training mode) on ``train_ids``; returns the
    training loss (nats/char) of every step. Windows are drawn on the CPU and moved to the
    model's device."""
    cfg: GPTConfig = model.cfg  # type: ignore[assignment]
    dev = device_of(model)
    gen = torch.Generator().manual_seed(s.seed)
    opt = _optimizer(model, s)
    losses: list[float] = []
    model.train()
    for step in range(s.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, s)
        x, y = batches(train_ids, cfg.block, s.batch, gen)
        x, y = x.to(dev), y.to(dev)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), s.clip)
        opt.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise CorpusError(f"training diverged at step {step} (loss {losses[-1]}); lower lr")
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return losses


def train_lm(
    corpus: Corpus,
    cfg: GPTConfig | None = None,
    s: TrainSettings | None = None,
    *,
    progress=None,  # noqa: ANN001
    eval_chars: int = 16384,
    device: torch.device | str = "cpu",
) -> tuple[GPT, dict]:
    """A new model trained digitally on ``corpus`` on ``device`` (initialised on the CPU, then
    moved); returns it and its record (settings, losses before and after on the validation
    windows, seconds, device)."""
    s = s or TrainSettings()
    cfg = cfg or GPTConfig(vocab=len(corpus.chars))
    torch.manual_seed(s.seed)
    model = GPT(cfg).to(device)
    train_ids, val_ids = corpus.encode(corpus.train), corpus.encode(corpus.val)
    vx, vy = windows(val_ids, cfg.block, eval_chars)
    before = loss_on(model, vx, vy)
    t0 = time.perf_counter()
    losses = fit_lm(model, train_ids, s, progress=progress)
    record = {
        "corpus": corpus.name,
        "corpus_source": corpus_version() if corpus.name == "shakespeare" else corpus.name,
        "train_chars": len(corpus.train),
        "val_chars": len(corpus.val),
        "settings": vars(s),
        "params": model.num_params(),
        "val_loss_before": before,
        "val_loss": loss_on(model, vx, vy),
        "train_loss_last": sum(losses[-20:]) / len(losses[-20:]),
        "seconds": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
        "device": str(device_of(model)),
    }
    return model, record


def hwa_finetune(
    model: GPT,
    corpus: Corpus,
    chip: ChipSpec,
    s: TrainSettings,
    *,
    noise_scale: float = 1.0,
    calibration_windows: int = 8,
    progress=None,  # noqa: ANN001
) -> tuple[GPT, dict]:
    """Hardware-aware fine-tuning of ``model`` for ``chip``: deploy it (converter ranges
    calibrated on training windows), train with the chip in the forward pass
    (``noise_scale`` × the chip's programming and read noise), and return the digital model
    with the tuned weights, plus a record. Runs where ``model`` lives."""
    train_ids = corpus.encode(corpus.train)
    gen = torch.Generator().manual_seed(s.seed + 1)
    calib, _ = batches(train_ids, model.cfg.block, calibration_windows, gen)
    analog = deploy(model, chip, calibration=calib, digital_fallback=True, seed=s.seed)
    for k, (_, m) in enumerate(analog_layers(analog)):
        m.settings.hwa_noise_scale = noise_scale
        m._gen.manual_seed(s.seed * 7919 + k)
    t0 = time.perf_counter()
    losses = fit_lm(analog, train_ids, s, progress=progress)
    program(analog, s.seed)
    tuned = undeploy(analog)
    assert isinstance(tuned, GPT)
    record = {
        "chip": chip.name,
        "settings": vars(s),
        "noise_scale": noise_scale,
        "device": str(device_of(model)),
        "train_loss_first": sum(losses[:20]) / max(1, len(losses[:20])),
        "train_loss_last": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "seconds": time.perf_counter() - t0,
    }
    return tuned, record


def save_model(model: GPT, chars: str, record: dict, path: str | Path) -> Path:
    """Write a trained model (config, vocabulary, weights on the CPU, record) atomically to
    ``path``."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {"config": model.cfg.as_dict(), "chars": chars, "state": state, "record": record}, path
    )
    return Path(path)


def load_model(path: str | Path) -> tuple[GPT, str, dict]:
    """A model saved by :func:`save_model`: (model in eval mode, vocabulary, record)."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = GPT(GPTConfig(**blob["config"]))
        model.load_state_dict(blob["state"])
    except FileNotFoundError:
        raise CorpusError(f"no trained model at {path}; run 'npusim lm-train'") from None
    except (KeyError, TypeError, RuntimeError, EOFError, ValueError) as e:
        raise CorpusError(f"{path} is not a trained npusim language model ({e})") from None
    return model.eval(), blob["chars"], dict(blob.get("record", {}))
