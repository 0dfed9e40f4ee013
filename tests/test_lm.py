"""The character-level GPT on the chip: exactness on the ideal chip, the token bill, training,
reproducible generation (tiny models on a small text the tests write)."""

from __future__ import annotations

import random

import pytest
import torch

from npusim.chip import load_chip
from npusim.deploy import set_time
from npusim.deploy.bill import TERMS
from npusim.deploy.layers import AnalogLinear, analog_layers
from npusim.deploy.lm import (
    GPT,
    GPTConfig,
    KVCache,
    TrainSettings,
    deploy_lm,
    freeze,
    generate,
    load_model,
    loss_on,
    save_model,
    token_bill,
    train_lm,
)
from npusim.deploy.lm.bill import GELU_OPS, LN_OPS, SOFTMAX_OPS, chip_sram_bytes, token_events
from npusim.deploy.lm.corpus import Corpus, markdown_to_text, text_corpus
from npusim.deploy.lm.train import windows

TINY = {"block": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}


def _text() -> str:
    r = random.Random(0)
    words = "the cat sat on a mat and the dog ran to see it while birds sang".split()
    lines = [
        " ".join(r.choice(words) for _ in range(r.randint(4, 9))).capitalize() + "."
        for _ in range(600)
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    path = tmp_path_factory.mktemp("lm") / "tiny.txt"
    path.write_text(_text(), encoding="utf-8")
    return text_corpus(path)


@pytest.fixture(scope="module")
def model(corpus: Corpus) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab=len(corpus.chars), **TINY)).eval()


def test_markdown_play_becomes_plain_text() -> None:
    md = "# Hamlet\n\n## ACT I\n\n**BERNARDO**  \nWho's there?\n\n_Exit Ghost_\n"
    assert markdown_to_text(md) == "Hamlet\n\nACT I\n\nBERNARDO:\nWho's there?\n\nExit Ghost\n\n"


def test_kv_cache_matches_full_sequence(model: GPT, corpus: Corpus) -> None:
    idx = corpus.encode(corpus.train[:20]).view(1, -1)
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.cfg, 1)
        parts = [model(idx[:, :7], cache)] + [model(idx[:, i : i + 1], cache) for i in range(7, 20)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_ideal_chip_equals_digital_logits(model: GPT, corpus: Corpus) -> None:
    x, _ = windows(corpus.encode(corpus.train), model.cfg.block, 4 * model.cfg.block)
    analog = deploy_lm(model, load_chip("ideal"), x, seed=3)
    set_time(analog, 86400.0)
    with torch.no_grad():
        want = model(x)
        assert torch.allclose(analog(x), want, atol=2e-5, rtol=1e-5)
        assert torch.allclose(freeze(analog)(x), want, atol=2e-5, rtol=1e-5)
        # token by token through the frozen layers' one-token kernel and the KV cache
        fz, cache = freeze(analog), KVCache(model.cfg, 1)
        steps = [fz(x[:1, i : i + 1], cache) for i in range(8)]
    assert torch.allclose(torch.cat(steps, 1), want[:1, :8], atol=2e-5, rtol=1e-5)
    names = {n.rsplit(".", 1)[-1] for n, _ in analog_layers(analog)}
    assert names == {"qkv", "proj", "fc1", "fc2", "head"}


def test_frozen_layer_is_the_layer_on_pcm(model: GPT, corpus: Corpus) -> None:
    """The fused fast path computes the analog layer's own arithmetic (output noise off):
    outputs agree except where a rounding lands the other side of a level (<= 1 ADC LSB)."""
    x, _ = windows(corpus.encode(corpus.train), model.cfg.block, 2 * model.cfg.block)
    analog = deploy_lm(model, load_chip("pcm"), x, seed=1, out_noise=False)
    set_time(analog, 3600.0)
    m = analog.blocks[0].fc2
    assert isinstance(m, AnalogLinear)
    h = torch.randn(64, m.in_features)
    with torch.no_grad():
        a, b = m(h), freeze(analog).blocks[0].fc2(h)
        c = torch.cat([freeze(analog).blocks[0].fc2(h[i : i + 1]) for i in range(64)])
    lsb = (m.adc_range[1] - m.adc_range[0]) / (2**m.adc_bits - 1) * float(m._alpha.max())
    assert (a - b).abs().max() <= 1.01 * lsb * m.row_blocks
    assert (a - b).abs().gt(1e-4).float().mean() < 0.05
    assert torch.allclose(b, c, atol=1e-4)


def test_token_energy_is_counts_times_constants_and_grows_with_kv_reads(
    model: GPT, corpus: Corpus
) -> None:
    chip = load_chip("pcm")
    x, _ = windows(corpus.encode(corpus.train), model.cfg.block, model.cfg.block)
    analog = deploy_lm(model, chip, x)
    cfg, e = model.cfg, chip.energy
    d, L, h = cfg.n_embd, cfg.n_layer, cfg.n_head
    b1, b2 = token_bill(analog, chip, 5), token_bill(analog, chip, 25)
    assert tuple(b1["energy_j"]) == TERMS
    ev = b1["events"]
    assert b1["energy_j"]["array"] == pytest.approx(ev["device_reads"] * e.read_device)
    assert b1["energy_j"]["adc"] == pytest.approx(ev["adc"] * e.adc_energy(8))
    assert b1["energy_j"]["digital"] == pytest.approx(
        ev["digital_ops"] * e.digital_mac + ev["fp32_ops"] * e.digital_fp32_op
    )
    assert ev["device_reads"] == 2 * sum(
        m.in_features * m.out_features for _, m in analog_layers(analog)
    )
    # 20 more positions of context: 20 more cached keys and values read per layer (1 B each),
    # their attention MACs, scores and softmax; nothing analog changes
    dt = 20
    kv = dt * L * 2 * d
    assert b2["events"]["kv_sram_bytes"] - ev["kv_sram_bytes"] == kv
    assert b2["events"]["device_reads"] == ev["device_reads"]
    want_sram = (kv + dt * L * 2 * h) * e.sram_per_byte
    want_digital = (
        dt * L * 2 * d * e.digital_mac + dt * L * h * (1 + SOFTMAX_OPS) * e.digital_fp32_op
    )
    assert b2["energy_j"]["sram"] - b1["energy_j"]["sram"] == pytest.approx(want_sram)
    assert b2["energy_j"]["digital"] - b1["energy_j"]["digital"] == pytest.approx(want_digital)
    static = e.static_power * ev["arrays"] * (b2["latency_s"] - b1["latency_s"])
    assert b2["total_energy_j"] - b1["total_energy_j"] == pytest.approx(
        want_sram + want_digital + static
    )
    assert b2["total_energy_j"] > b1["total_energy_j"]
    # the fixed digital work of a token, from the module's operation table
    fixed = (2 * L + 1) * LN_OPS * d + L * GELU_OPS * 4 * d + (SOFTMAX_OPS + 1) * cfg.vocab
    assert ev["fp32_ops"] == fixed + L * h * 5 * (1 + SOFTMAX_OPS)
    # a KV cache larger than the SRAM spills to DRAM
    spill = token_events(analog, 25, sram_bytes=10 * L * 2 * d)
    assert spill["kv_sram_bytes"] == 10 * L * 2 * d
    assert spill["kv_dram_bytes"] == 16 * L * 2 * d
    assert chip_sram_bytes(chip) >= 64 * 1024
    for b in b1["baselines"].values():
        assert b["total_j"] > 0 and b["time_s"] > 0


def test_short_training_lowers_the_loss(corpus: Corpus, tmp_path) -> None:
    cfg = GPTConfig(vocab=len(corpus.chars), **TINY)
    s = TrainSettings(steps=60, batch=16, lr=1e-2, warmup=5, seed=0)
    trained, record = train_lm(corpus, cfg, s, eval_chars=2048)
    # from ~ln(vocab) = 3.3 nats/char to the text's word statistics: at least 0.8 nats lower
    assert record["val_loss"] < record["val_loss_before"] - 0.8
    path = save_model(trained, corpus.chars, record, tmp_path / "m.pt")
    again, chars, rec = load_model(path)
    x, y = windows(corpus.encode(corpus.val), cfg.block, 1024)
    assert chars == corpus.chars and rec["val_loss"] == record["val_loss"]
    assert loss_on(again, x, y) == pytest.approx(loss_on(trained, x, y), abs=1e-6)


def test_generation_is_reproducible_from_a_seed(model: GPT, corpus: Corpus) -> None:
    x, _ = windows(corpus.encode(corpus.train), model.cfg.block, model.cfg.block)
    chip = load_chip("pcm")
    prompt = corpus.encode("The cat")

    def run(seed: int) -> list[int]:
        analog = deploy_lm(model, chip, x, seed=seed)
        set_time(analog, 86400.0)
        out, positions = generate(freeze(analog), prompt, 40, temperature=1.0, seed=seed)
        assert len(positions) >= 40 + len(prompt) - 1  # prompt, tokens, refills of the context
        assert max(positions) <= model.cfg.block
        return out.tolist()

    a, b, c = run(4), run(4), run(5)
    assert a == b
    assert a != c
    assert len(a) == 40
