"""A small decoder-only transformer over characters (GPT-style, in the spirit of nanoGPT).

``x = tok_emb[idx] + pos_emb[t]``; each of ``n_layer`` pre-norm blocks computes
``x += proj(attention(qkv(ln1(x))))`` and ``x += fc2(gelu(fc1(ln2(x))))``; the logits are
``head(ln_f(x))``. Every weight matrix (``qkv``, ``proj``, ``fc1``, ``fc2``, ``head``) is an
``nn.Linear``, so :func:`npusim.deploy.deploy` puts it on the chip's arrays; the embeddings,
layer norms, attention's products and softmax stay digital.

``forward(idx, cache)`` runs a whole sequence (training, evaluation, a prompt) or, with a
:class:`KVCache`, appends tokens to the cached keys and values (generation: one token per
call, each attending to every cached position). Batch-first: ``idx`` is (B, T).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit
from torch import Tensor, nn


@njit(cache=True, fastmath=True)
def _attend_one(qkv: np.ndarray, kc: np.ndarray, vc: np.ndarray, s: int, out: np.ndarray) -> None:
    """One new position's causal attention with a KV cache, in one pass: store its key and
    value at position ``s`` of ``kc``/``vc`` (H, block, hd), then per head the softmax of
    the scaled scores over positions 0..s and the weighted sum of the values into ``out``."""
    h_n, _, hd = kc.shape
    d = h_n * hd
    scale = np.float32(1.0 / np.sqrt(hd))
    p = np.empty(s + 1, dtype=np.float32)
    for h in range(h_n):
        for j in range(hd):
            kc[h, s, j] = qkv[d + h * hd + j]
            vc[h, s, j] = qkv[2 * d + h * hd + j]
        top = np.float32(-np.inf)
        for t in range(s + 1):
            acc = np.float32(0.0)
            for j in range(hd):
                acc += qkv[h * hd + j] * kc[h, t, j]
            p[t] = acc * scale
            top = max(top, p[t])
        total = np.float32(0.0)
        for t in range(s + 1):
            p[t] = np.exp(p[t] - top)
            total += p[t]
        for j in range(hd):
            out[h * hd + j] = np.float32(0.0)
        for t in range(s + 1):
            w = p[t] / total
            for j in range(hd):
                out[h * hd + j] += w * vc[h, t, j]


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the model: ``vocab`` characters, ``block`` positions of context, ``n_layer``
    blocks of ``n_head`` heads over ``n_embd`` features (MLP width 4·n_embd). The default,
    1.02 M parameters, has ``n_embd`` = 128 = the rows of one array, so every matrix fills
    whole row blocks."""

    vocab: int
    block: int = 128
    n_layer: int = 5
    n_head: int = 4
    n_embd: int = 128

    def as_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of the positions seen so far, per layer: (B, n_head, block, head_dim)
    buffers filled up to ``length``, on ``device``."""

    def __init__(
        self,
        cfg: GPTConfig,
        batch: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        hd = cfg.n_embd // cfg.n_head
        shape = (batch, cfg.n_head, cfg.block, hd)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.length = 0


class Block(nn.Module):
    """One pre-norm transformer block (causal self-attention, then a GELU MLP)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.n_embd
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def attend(self, x: Tensor, layer: int, cache: KVCache | None) -> Tensor:
        b, t, d = x.shape
        h = self.n_head
        if cache is not None and b == 1 and t == 1 and x.device.type == "cpu":  # fused kernel
            qkv = self.qkv(self.ln1(x)).detach().reshape(3 * d).contiguous()
            y1 = torch.empty(d)
            _attend_one(
                qkv.numpy(),
                cache.k[layer][0].numpy(),
                cache.v[layer][0].numpy(),
                cache.length,
                y1.numpy(),
            )
            return self.proj(y1.view(1, 1, d))
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = cache.length
            cache.k[layer][:b, :, s : s + t] = k
            cache.v[layer][:b, :, s : s + t] = v
            keys, vals = cache.k[layer][:b, :, : s + t], cache.v[layer][:b, :, : s + t]
            att = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
            if t > 1:  # a prompt: each new position sees the cache and the new ones before it
                mask = torch.ones(t, s + t, dtype=torch.bool, device=x.device).tril(diagonal=s)
                att = att.masked_fill(~mask, float("-inf"))
            y = torch.softmax(att, dim=-1) @ vals
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: Tensor, layer: int, cache: KVCache | None = None) -> Tensor:
        x = x + self.attend(x, layer, cache)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class GPT(nn.Module):
    """The character-level language model (see the module docstring)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab)
        self.apply(_init)
        for b in self.blocks:  # scaled residual projections (GPT-2)
            for lin in (b.proj, b.fc2):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, vocab) of the next character after each position of ``idx`` (B, T);
        with ``cache`` the positions continue from ``cache.length`` and the cache grows."""
        b, t = idx.shape
        s = 0 if cache is None else cache.length
        if s + t > self.cfg.block:
            raise ValueError(f"{s + t} positions exceed the model's context of {self.cfg.block}")
        x = self.tok(idx) + self.pos(torch.arange(s, s + t, device=idx.device))
        for i, blk in enumerate(self.blocks):
            x = blk(x, i, cache)
        if cache is not None:
            cache.length = s + t
        return self.head(self.ln_f(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: Tensor,
    tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    on_token=None,  # noqa: ANN001 - callable(int) -> None, called as each token is drawn
) -> tuple[Tensor, list[int]]:
    """Sample ``tokens`` characters after ``prompt`` (1-D token ids) with a KV cache.

    ``temperature`` > 0 divides the logits (0: greedy); ``top_k`` keeps the k likeliest;
    ``seed`` makes the draw reproducible. When the context is full the last half of it is
    run again as a fresh prompt (absolute positions restart). Returns the new token ids and
    the context length (positions attended, the new one included) of every forward position
    run — the prompt's, each generated token's and those of every refill — for the bill.

    Runs on one torch thread (restored after): a token is dozens of small operations, for
    which a thread pool costs more than it gives, and on a busy machine far more. A model on
    a GPU runs its forward passes there; the draws from ``seed`` stay on the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _generate(model, prompt, tokens, temperature, top_k, seed, on_token)
    finally:
        torch.set_num_threads(threads)


def _generate(model, prompt, tokens, temperature, top_k, seed, on_token):  # noqa: ANN001, ANN202
    cfg: GPTConfig = model.cfg  # type: ignore[assignment]
    model.eval()
    dev = device_of(model)
    gen = torch.Generator().manual_seed(int(seed))  # sampling on the CPU wherever the model is
    cache = KVCache(cfg, 1, device=dev)
    ctx = prompt[-cfg.block :].view(1, -1).to(dev)
    if ctx.shape[1] == 0:
        ctx = torch.zeros(1, 1, dtype=torch.int64, device=dev)
    positions = list(range(1, ctx.shape[1] + 1))
    logits = model(ctx, cache)[:, -1]
    history = ctx[0].tolist()
    out: list[int] = []
    for _ in range(tokens):
        if temperature <= 0:
            nxt = int(logits.argmax(-1))
        else:
            lg = logits / temperature
            if top_k is not None and top_k < lg.shape[-1]:
                kth = torch.topk(lg, top_k).values[:, -1:]
                lg = lg.masked_fill(lg < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(lg, -1).cpu(), 1, generator=gen))
        out.append(nxt)
        history.append(nxt)
        if on_token is not None:
            on_token(nxt)
        if len(out) == tokens:
            break
        if cache.length >= cfg.block:  # refill: the last half of the context as a new prompt
            keep = history[-(cfg.block // 2) :]
            cache = KVCache(cfg, 1, device=dev)
            positions += list(range(1, len(keep) + 1))
            logits = model(torch.tensor([keep], device=dev), cache)[:, -1]
        else:
            positions.append(cache.length + 1)
            logits = model(torch.tensor([[nxt]], device=dev), cache)[:, -1]
    return torch.tensor(out, dtype=torch.int64), positions
