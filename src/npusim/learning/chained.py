"""Chained BP–EP: EqProp inside each energy-based block, backprop between blocks.

For a hybrid network (:class:`npusim.circuits.hybrid.HybridNetwork`; Nest & Ernoult, "Towards
training digitally-tied analog blocks via hybrid gradient computation", NeurIPS 2024):

1. free pass: each block settles with the previous block's output (through the digital ops
   between: pooling, batch normalisation with the batch's statistics) clamped as its input
   ``u_k``; an analog feed-forward layer is read once;
2. backward, last block first: block ``k`` is nudged — towards the target (the last block,
   cost ``½‖s − t‖²``) or along the error signal ``δ_k`` handed back by block ``k+1`` (cost
   ``⟨δ_k, s⟩``) — and EqProp reads its parameters' gradient from the two nudged equilibria,
   ``(∂E_k/∂θ(s^+β) − ∂E_k/∂θ(s^−β)) / 2β`` (centered; the one-sided variants use the free
   equilibrium for the other), and the error on its input from the same equilibria,
   ``g_u = (∂E_k/∂u(s^+β) − ∂E_k/∂u(s^−β)) / 2β``;
   an analog feed-forward layer ``s = clip(A(u) + b)`` is a block without phases: backprop
   gives its gradient and ``g_u`` from ``δ_k`` directly (:meth:`FeedForwardLayer.backward`);
3. ``g_u`` goes back through the digital ops by backprop (autograd; the converters between
   blocks pass it straight through) and becomes ``δ_{k−1}``; on the way it gives each batch
   norm's γ and β their gradients.

Each block's phases are its own relaxations; the estimate lists them per block
(``GradientEstimate.blocks``; a feed-forward layer's: its one read, the free phase) so the
ledger counts what each block ran.
"""

from __future__ import annotations

import torch
from torch import Tensor

from npusim.circuits.block import FeedForwardLayer, HopfieldBlock
from npusim.circuits.hybrid import HybridNetwork
from npusim.core.interfaces import GradientEstimate, Reader, Relaxation, Update
from npusim.core.phases import Phase


def _nudged(
    block: HopfieldBlock,
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
    betas = free.state[0].new_full((2 * n, 1), beta)
    betas[n:] = -beta
    both = block.relax(
        u, [torch.cat([s, s]) for s in free.state], beta=betas, sweeps=sweeps, tol=tol,
        drive=torch.cat([drive, drive]), **{k: torch.cat([v, v]) for k, v in cue.items()},
    )  # fmt: skip
    plus = Relaxation([s[:n] for s in both.state], both.residual, both.sweeps)
    minus = Relaxation([s[n:] for s in both.state], both.residual, both.sweeps)
    phases = {Phase.NUDGED_PLUS: plus, Phase.NUDGED_MINUS: minus}
    return phases, plus.state, minus.state, 1.0 / (2 * beta)


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
    order of ``model.params()``; ``read``: how the chip reads the equilibria (None: exactly).
    Batch norms use the batch's statistics and update their running ones once."""
    n = x.shape[0]
    seen: list[Tensor] = []  # what each block's digital ops read
    inputs: list[Tensor] = []
    drives: list[Tensor] = []
    frees: list[Relaxation] = []
    prev = None
    for k, block in enumerate(model.blocks):
        seen.append(model.convert(k, x, prev))
        u = model.apply_ops(k, seen[-1], train=True)
        drives.append(block.couplings[0].drive(u))
        frees.append(block.relax(u, sweeps=free_sweeps or sweeps, tol=tol, drive=drives[-1]))
        inputs.append(u)
        prev = frees[-1].state[-1]
    last = len(model.blocks) - 1
    grads: list[list[tuple[Update, Update]]] = [[] for _ in model.blocks]
    blocks: list[dict[Phase, Relaxation]] = [{Phase.FREE: f} for f in frees]
    cue: dict[str, Tensor] = {"target": target.to(prev.dtype)}
    for k in range(last, -1, -1):
        block, u = model.blocks[k], inputs[k]
        # the error on the input is needed for the block before, or for batch norms before it
        need = model.needs_input_error(k)
        if isinstance(block, FeedForwardLayer):  # backprop: never the last block
            g, g_u = block.backward(u, drives[k], cue["delta"], need_input=need)
        else:
            phases, a, b, scale = _nudged(
                block, u, drives[k], frees[k], beta, variant, cue, sweeps, tol
            )
            blocks[k].update(phases)
            if read is not None:
                a, b = read(a), read(b)
            g = block.grad_difference(u, a, b, scale)
            g_u = block.input_grad_difference(a, b, scale) if need else None
        norms: list[tuple[Tensor, Tensor]] = []
        if g_u is not None:
            g_u, norms = model.ops_backward(k, seen[k], g_u, need_input=k > 0)
        grads[k] = [(gw / n, gb / n) for gw, gb in norms] + model.pairs_of(block, g)
        if k > 0:
            cue = {"delta": g_u}
    # one relaxation per phase for the whole network: a feed-forward layer's output is the
    # same in every phase
    phases = {ph: _merge([blk.get(ph, blk[Phase.FREE]) for blk in blocks]) for ph in blocks[last]}
    return GradientEstimate(model.join(grads), phases[Phase.FREE], phases, blocks)
