"""Chained BP–EP: EqProp inside each energy-based block, backprop between blocks.

For a hybrid network (:class:`npusim.circuits.hybrid.HybridNetwork`; Nest & Ernoult, "Towards
training digitally-tied analog blocks via hybrid gradient computation", NeurIPS 2024):

1. free pass: each block settles with the previous block's output (through the pooling blocks)
   clamped as its input ``u_k``;
2. backward, last block first: block ``k`` is nudged — towards the target (the last block,
   cost ``½‖s − t‖²``) or along the error signal ``δ_k`` handed back by block ``k+1`` (cost
   ``⟨δ_k, s⟩``) — and EqProp reads its parameters' gradient from the two nudged equilibria,
   ``(∂E_k/∂θ(s^+β) − ∂E_k/∂θ(s^−β)) / 2β`` (centered; the one-sided variants use the free
   equilibrium for the other), and the error on its input from the same equilibria,
   ``g_u = (∂E_k/∂u(s^+β) − ∂E_k/∂u(s^−β)) / 2β``;
3. ``g_u`` goes back through the digital pooling blocks by backprop (the converters between
   blocks pass it straight through) and becomes ``δ_{k−1}``.

Each block's phases are its own relaxations; the estimate lists them per block
(``GradientEstimate.blocks``) so the ledger counts what each block ran.
"""

from __future__ import annotations

import torch
from torch import Tensor

from npusim.circuits.hybrid import HybridNetwork, pool
from npusim.core.interfaces import GradientEstimate, Reader, Relaxation, Update
from npusim.core.phases import Phase


def _nudged(
    block,
    u: Tensor,
    drive: Tensor,
    free: Relaxation,
    beta: float,
    variant: str,
    cue: dict,
    sweeps: int,
    tol: float,
) -> tuple[dict[Phase, Relaxation], list[Tensor], list[Tensor], float]:
    """The block's nudged phases and the two equilibria (and scale) its gradient reads
    (``drive``: the block's input drive, computed once for all its phases)."""
    if variant != "centered":
        b = beta if variant == "positive" else -beta
        rel = block.relax(u, free.state, beta=b, sweeps=sweeps, tol=tol, drive=drive, **cue)
        if variant == "positive":
            return {Phase.NUDGED_PLUS: rel}, rel.state, free.state, 1.0 / beta
        return {Phase.NUDGED_MINUS: rel}, free.state, rel.state, 1.0 / beta
    n = u.shape[0]
    betas = torch.full((2 * n, 1), beta, dtype=free.state[0].dtype)
    betas[n:] = -beta
    both = block.relax(
        u, [torch.cat([s, s]) for s in free.state], beta=betas, sweeps=sweeps, tol=tol,
        drive=torch.cat([drive, drive]), **{k: torch.cat([v, v]) for k, v in cue.items()},
    )  # fmt: skip
    plus = Relaxation([s[:n] for s in both.state], both.residual, both.sweeps)
    minus = Relaxation([s[n:] for s in both.state], both.residual, both.sweeps)
    phases = {Phase.NUDGED_PLUS: plus, Phase.NUDGED_MINUS: minus}
    return phases, plus.state, minus.state, 1.0 / (2 * beta)


def _through_pools(model: HybridNetwork, k: int, prev: Tensor, g_u: Tensor) -> Tensor:
    """``g_u`` (the error on block ``k``'s input) back through the pooling blocks before it:
    the error on block ``k − 1``'s output layer."""
    if not model.pools[k]:
        return g_u
    with torch.enable_grad():
        s = prev.detach().requires_grad_(True)
        u = s
        for p in model.pools[k]:
            u = pool(p, u)
        (delta,) = torch.autograd.grad(u, s, g_u)
    return delta


def _merge(per_block: list[Relaxation]) -> Relaxation:
    """One relaxation standing for several blocks' (their states in order)."""
    state = [s for r in per_block for s in r.state]
    return Relaxation(state, max(r.residual for r in per_block), max(r.sweeps for r in per_block))


def chained_eqprop(
    model: HybridNetwork,
    x: Tensor,
    target: Tensor,
    *,
    beta: float,
    variant: str,
    sweeps: int,
    free_sweeps: int | None = None,
    tol: float = 0.0,
    read: Reader | None = None,
) -> GradientEstimate:
    """The chained BP–EP estimate of ``∂L/∂θ`` (``L`` = batch mean of ``½‖s_L − t‖²``) in the
    order of ``model.params()``; ``read``: how the chip reads the equilibria (None: exactly)."""
    inputs: list[Tensor] = []
    drives: list[Tensor] = []
    frees: list[Relaxation] = []
    prev = None
    for k, block in enumerate(model.blocks):
        u = model.block_input(k, x, prev)
        drives.append(block.couplings[0].drive(u))
        frees.append(block.relax(u, sweeps=free_sweeps or sweeps, tol=tol, drive=drives[-1]))
        inputs.append(u)
        prev = frees[-1].state[-1]
    last = len(model.blocks) - 1
    grads: list[list[Update]] = [[] for _ in model.blocks]
    blocks: list[dict[Phase, Relaxation]] = [{Phase.FREE: f} for f in frees]
    cue: dict[str, Tensor] = {"target": target.to(prev.dtype)}
    for k in range(last, -1, -1):
        block, u = model.blocks[k], inputs[k]
        phases, a, b, scale = _nudged(
            block, u, drives[k], frees[k], beta, variant, cue, sweeps, tol
        )
        blocks[k].update(phases)
        if read is not None:
            a, b = read(a), read(b)
        grads[k] = block.grad_difference(u, a, b, scale)
        if k > 0:
            g_u = block.input_grad_difference(a, b, scale)
            cue = {"delta": _through_pools(model, k, frees[k - 1].state[-1], g_u)}
    phases = {ph: _merge([blk[ph] for blk in blocks]) for ph in blocks[0]}
    return GradientEstimate(model.join(grads), phases[Phase.FREE], phases, blocks)
