"""Layered energy-based networks relaxed by exact block-coordinate descent.

A network has layers ``s_0 .. s_L``: ``s_0`` is the clamped input, ``s_1 .. s_L`` are free
(``s_L`` is the output). ``weights[k]`` couples layer ``k`` and ``k+1`` (shape ``(n_k, n_{k+1})``)
and ``biases[k]`` acts on layer ``k+1``. No coupling exists inside a layer, so each layer's
exact minimiser given its neighbours is closed form; odd and even layers alternate.

The output layer can be nudged towards a target by adding ``beta * C`` to the energy, with the
squared-error cost ``C = ½‖s_L − t‖²``; ``beta = inf`` clamps the output to the target.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from npusim.chip.spec import ChipSpec
from npusim.circuits.phases import check_betas, relax_phases, split_tiles, tile_betas
from npusim.core.errors import NpusimError
from npusim.core.interfaces import ArrayShape, Relaxation, Update, dense_arrays
from npusim.core.outer import kept_transpose

FUSED_DTYPES = (torch.float32, torch.float64)


class RelaxationDiverged(NpusimError, RuntimeError):
    """The relaxation produced NaN or inf: the network's parameters are unusable."""


def _check_finite(*residuals: float) -> None:
    """Raise :class:`RelaxationDiverged` unless every residual is finite."""
    if not all(math.isfinite(r) for r in residuals):
        raise RelaxationDiverged(
            "relaxation diverged (NaN/inf in the network state); "
            "lower the learning rate or check the parameters"
        )


class NudgeNotConvex(NpusimError, ValueError):
    """A negative nudge −β larger than the output's curvature: no equilibrium exists."""


class LayeredNetwork(ABC):
    """Common machinery of the deep Hopfield and deep resistive networks."""

    sizes: list[int]
    weights: list[Tensor]
    biases: list[Tensor]
    normalised_states: bool = True  # states are normalised signals (a converter range applies)

    def __init__(self, sizes: list[int], dtype: torch.dtype = torch.float32) -> None:
        if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
            raise ValueError(f"layer sizes must be >= 2 positive integers, got {sizes}")
        self.sizes = [int(n) for n in sizes]
        self.dtype = dtype

    # ---- interface the subclasses implement -------------------------------------------
    @abstractmethod
    def input_layer(self, x: Tensor) -> Tensor:
        """The clamped layer ``s_0`` for raw inputs ``x`` of shape (batch, features)."""

    @abstractmethod
    def energy(self, x: Tensor, state: list[Tensor]) -> Tensor:
        """Energy of each sample, shape (batch,)."""

    @abstractmethod
    def param_grads(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        """∂E/∂θ averaged over the batch, in the order of :meth:`params`."""

    @abstractmethod
    def _layer_solve(self, k: int, drive: Tensor) -> Tensor:
        """Exact minimiser of hidden layer ``k`` (1-based) given its summed neighbour drive."""

    @abstractmethod
    def _activate_output(self, v: Tensor) -> Tensor:
        """Projection of unconstrained output values onto the output units' feasible set."""

    @abstractmethod
    def _output_curvature(self) -> Tensor | float:
        """Curvature of the energy along each output unit (1 for the DHN, ΣG for the DRN)."""

    @property
    @abstractmethod
    def signed(self) -> list[bool]:
        """Per parameter (order of :meth:`params`): may it take negative values?"""

    # ---- shared ------------------------------------------------------------------------
    def params(self) -> list[Tensor]:
        """All parameters: weights then biases."""
        return [*self.weights, *self.biases]

    @property
    def logical_sizes(self) -> list[int]:
        """Layer sizes as the user gave them (equal to ``sizes`` unless inputs are duplicated)."""
        return list(self.sizes)

    def grad_difference(
        self, x: Tensor, a: list[Tensor], b: list[Tensor], scale: float
    ) -> list[Update]:
        """``scale · (∂E/∂θ(a) − ∂E/∂θ(b))``; networks override it with a fused form."""
        ga, gb = self.param_grads(x, a), self.param_grads(x, b)
        return [(p - q) * scale for p, q in zip(ga, gb, strict=True)]

    def dissipated_power(self, x: Tensor, state: list[Tensor]) -> Tensor | None:
        """Steady-state power per sample in the network's units; None: not a resistive circuit."""
        return None

    def read_gains(self, spec: ChipSpec) -> list[Tensor] | None:
        """Read-out gains to the ADC's normalised input; None: states are normalised already."""
        return None

    @property
    def arrays(self) -> list[ArrayShape]:
        """One dense array per weight matrix (physical sizes), one block."""
        return dense_arrays(self.sizes)

    def block_sweeps(self, sweeps: int) -> list[int]:
        """One block, relaxed for ``sweeps`` sweeps."""
        return [sweeps]

    @property
    def num_layers(self) -> int:
        """Number of free layers L (hidden layers + output)."""
        return len(self.sizes) - 1

    def init_state(self, batch: int) -> list[Tensor]:
        """All-zero free layers."""
        on = self.weights[0].device
        return [torch.zeros(batch, n, dtype=self.dtype, device=on) for n in self.sizes[1:]]

    def output(self, state: list[Tensor]) -> Tensor:
        return state[-1]

    @staticmethod
    def cost(state: list[Tensor], target: Tensor) -> Tensor:
        """Squared error ½‖s_L − t‖² per sample, shape (batch,)."""
        return 0.5 * (state[-1] - target).pow(2).sum(1)

    def _drive(self, k: int, state: list[Tensor], input_drive: Tensor) -> Tensor:
        """Σ of couplings into layer k (1-based) from its neighbours, plus its bias."""
        if k == 1:
            d = input_drive
        else:  # F.linear on the contiguous transpose: fast even for a narrow layer k
            d = F.linear(state[k - 2], self._transposed(k - 1), self.biases[k - 1])
        if k < self.num_layers:
            d = torch.addmm(d, state[k], self.weights[k].t())
        return d

    def _memo(self, name: str, deps: tuple[Tensor, ...], compute):
        """``compute()``, cached until a tensor in ``deps`` is replaced or changed in place.

        Nothing is cached while a dependency requires grad (backprop differentiates through
        it). The cache keeps ``deps`` alive, so their ids cannot be reused by new tensors.
        """
        key = []
        for t in deps:
            if t.requires_grad:
                return compute()
            key += (id(t), t._version)
        cache = self.__dict__.setdefault("_memo_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] != key:  # (lists compare element by element)
            hit = cache[name] = (key, deps, compute())
        return hit[2]

    def _clamped_input(self, x: Tensor) -> Tensor:
        """:meth:`input_layer` of ``x``, cached while ``x`` is the same unchanged tensor (the
        phases and the gradient estimate of a batch share it)."""
        return self._memo("s_in", (x,), lambda: self.input_layer(x))

    def _transposed(self, k: int) -> Tensor:
        """``weights[k]ᵀ`` as a contiguous tensor, cached until the weights change (the one
        the weight update made when it made one)."""
        w = self.weights[k]
        kept = kept_transpose(w)
        return kept if kept is not None else self._memo(f"wt{k}", (w,), lambda: w.t().contiguous())

    def _input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Clamped input layer and its drive on layer 1, reused across the phases of a batch."""
        w, b = self.weights[0], self.biases[0]

        def compute() -> tuple[Tensor, Tensor]:
            s_in = self.input_layer(x)
            return s_in, torch.addmm(b, s_in, w)

        return self._memo("input", (x, w, b), compute)

    def relax(
        self,
        x: Tensor,
        state: list[Tensor] | None = None,
        *,
        beta: float | Tensor = 0.0,
        target: Tensor | None = None,
        sweeps: int = 15,
        tol: float = 0.0,
        tile: int = 1,
    ) -> Relaxation:
        """Exact block-coordinate relaxation: odd layers, then even layers, per sweep.

        Stops after ``sweeps`` sweeps or once a sweep changes no unit by more than ``tol``
        (``tol = 0`` runs all sweeps). Raises :class:`RelaxationDiverged` on NaN/inf.
        ``beta`` may be a tensor of shape (batch, 1), one nudging strength per sample, and
        ``tile`` relaxes ``tile`` independent copies of the batch at once (the state and target
        then have ``tile × batch`` rows), e.g. the +β and −β phases of centered EqProp.
        """
        if sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {sweeps}")
        nudged = isinstance(beta, Tensor) or beta != 0.0
        if nudged and target is None:
            raise ValueError("a nudged relaxation (beta != 0) needs a target")
        self._check_nudge(float(beta.min()) if isinstance(beta, Tensor) else beta)
        if self._can_fuse(x, state, beta, target):
            return self._relax_fused(x, state, beta, target, sweeps, tol, tile)
        s_in, input_drive = self._input(x)
        if tile > 1:
            input_drive = input_drive.repeat(tile, 1)
        state = list(self.init_state(x.shape[0] * tile) if state is None else state)
        L = self.num_layers
        out_w, out_b, post = self._output_operator(beta, target, input_drive)
        order = list(range(1, L + 1, 2)) + list(range(2, L + 1, 2))
        residual = math.inf
        done = 0
        for done in range(1, sweeps + 1):
            check = tol > 0.0 or done == sweeps
            old = list(state) if check else None
            for k in order:
                if k < L:
                    state[k - 1] = self._layer_solve(k, self._drive(k, state, input_drive))
                else:  # without a hidden layer the output sees only the input
                    d = out_b if out_w is None else F.linear(state[k - 2], out_w, out_b)
                    if post is not None:  # per-sample nudging: (d + βt)/(c + β) row by row
                        d = torch.addcmul(post[1], d, post[0])
                    state[k - 1] = self._activate_output(d)
            if check:
                residual = max(float((s - o).detach().abs_().max()) for s, o in zip(state, old))
                _check_finite(residual)
                if residual <= tol:
                    break
        return Relaxation(state=state, residual=residual, sweeps=done)

    # ---- the fused relaxation (npusim.circuits.fused) ----------------------------------------
    fused: bool = True  # relax through the compiled sweep loop when it applies

    def _fused_units(self) -> tuple | None:
        """``(den, lo, hi, out_lo, out_hi)`` describing every unit for the fused relaxation:
        hidden layer k's minimiser is ``clamp(drive / den[k−1], lo[k−1], hi[k−1])`` (``den``
        None: no division), the output's ``clamp(·, out_lo, out_hi)``; None: not supported."""
        return None

    def _can_fuse(self, x: Tensor, state, beta, target) -> bool:
        return self._can_fuse_tensors(x, state, beta, target) and self._fused_units() is not None

    def _can_fuse_tensors(self, x: Tensor, state, beta, target) -> bool:
        """Every condition of :meth:`_can_fuse` but the network's own (``_fused_units``)."""
        if not self.fused or self.num_layers < 2 or self.dtype not in FUSED_DTYPES:
            return False
        for t in (x, target, beta, *(state or ())):
            if isinstance(t, Tensor) and t.requires_grad:
                return False  # backprop differentiates through the reference relaxation
        if x.device.type != "cpu":
            return False  # compiled for the CPU (numba); other devices run the reference
        for p in self.params():
            if p.requires_grad or p.dtype != self.dtype or p.device.type != "cpu":
                return False
            if not p.is_contiguous():
                return False
        return True

    def _check_nudge(self, lowest: float, c: Tensor | float | None = None) -> None:
        """Raise :class:`NudgeNotConvex` if a nudge of ``lowest`` (the most negative β) leaves
        the output energy without a minimum; ``c``: the output curvature if already read."""
        if lowest >= 0.0:
            return
        c = self._output_curvature() if c is None else c
        c = float(c.min()) if isinstance(c, Tensor) else float(c)
        if lowest + c <= 0:
            raise NudgeNotConvex(
                f"beta={lowest:g}: the −β phase makes the output energy non-convex (output "
                f"curvature {c:.3g}); lower --beta, or use --variant positive (no −β phase)"
            )

    def relax_phases(
        self,
        x: Tensor,
        target: Tensor,
        betas: tuple[float, ...],
        *,
        sweeps: int = 15,
        free_sweeps: int | None = None,
        tol: float = 0.0,
    ) -> tuple[Relaxation, list[Relaxation]]:
        """:func:`npusim.circuits.phases.relax_phases` (free, then the nudged tiles from its
        equilibrium), both phases in one compiled call where the fused relaxation applies:
        the same states, sweeps and residuals as the two ``relax`` calls."""
        betas = check_betas(betas)
        tiles, n0 = len(betas), x.shape[0]
        beta = tile_betas(betas, n0, self.weights[0])  # the network's dtype, as the states'
        units = self._fused_units() if self._can_fuse_tensors(x, None, beta, target) else None
        if units is None:
            return relax_phases(
                self, x, target, betas, sweeps=sweeps, free_sweeps=free_sweeps, tol=tol
            )
        free_sweeps = free_sweeps or sweeps
        if min(sweeps, free_sweeps) < 1:
            raise ValueError(f"sweeps must be >= 1, got {min(sweeps, free_sweeps)}")
        c = self._output_curvature()
        self._check_nudge(min(betas), c)
        from npusim.circuits import fused

        batch = n0 * tiles
        rows = n0 if n0 % fused.LANES == 0 else batch
        plan, transposed, den = self._fused_weights(units)
        nudge_target = target if tiles == 1 else torch.cat([target] * tiles)
        (fs, fd, fr), (ns, nd, nr) = fused.relax_phases(
            plan, transposed, den, (self._fused_base(x, n0), self._fused_base(x, rows)), n0,
            tiles, self._fused_output(0.0, None, n0, c),
            self._fused_output(beta, nudge_target, batch, c),
            free_sweeps=free_sweeps, sweeps=sweeps, tol=tol,
        )  # fmt: skip
        _check_finite(fr, nr)
        return Relaxation(fs, fr, fd), split_tiles(Relaxation(ns, nr, nd), tiles)

    def _fused_base(self, x: Tensor, rows: int):
        """The input drive of ``x`` in the fused lane layout for ``rows`` samples (row r takes
        sample r mod batch), cached with the drive until ``x`` or the input weights change."""
        from npusim.circuits import fused

        w, b = self.weights[0], self.biases[0]
        drive = self._memo(
            "drive",
            (x, w, b),
            lambda: fused.input_drive(
                self._clamped_input(x), w, b, wide=not self.normalised_states
            ),
        )
        return self._memo(
            f"lanes{rows // x.shape[0]}", (x, w, b), lambda: fused.chunked(drive, rows)
        )

    def _fused_output(
        self, beta: float | Tensor, target: Tensor | None, batch: int, c: Tensor | float | None
    ) -> tuple[Tensor, Tensor]:
        """``(scale, offset)``, each (batch, n_L), of the fused output operator (as the
        reference's ``post``); constant ones are expanded views. ``c``: the output curvature
        if already read."""
        c = self._output_curvature() if c is None else c
        dt = self.dtype
        if isinstance(beta, Tensor):  # as the reference's per-sample ``post``
            scale = 1.0 / (c + beta.to(dt))
            offset = beta * target.to(dt) * scale
        elif beta == 0.0:
            scale, offset = 1.0 / c, 0.0
        elif math.isinf(beta):
            scale, offset = 0.0 * c, target.to(dt)
        else:
            scale, offset = 1.0 / (c + beta), (beta / (c + beta)) * target.to(dt)
        n_out = self.sizes[-1]
        scale = torch.as_tensor(scale, dtype=dt).expand(batch, n_out)
        offset = torch.as_tensor(offset, dtype=dt).expand(batch, n_out)
        return scale, offset

    def _fused_weights(self, units: tuple) -> tuple:
        """``(plan, [W_kᵀ], den)`` of the fused relaxation for the network's ``_fused_units``:
        the :class:`fused.Plan` (kept while the parameters and unit bounds are the same
        tensors), the contiguous transposes, the hidden layers' divisors."""
        from npusim.circuits import fused

        params = self.params()
        key = (tuple(id(t) for t in params), tuple(id(t) for t in (*units[1], *units[2])))
        hit = self.__dict__.get("_fused_plan")
        if hit is None or hit[0] != key:  # views of the parameters: kept while they are
            hit = self.__dict__["_fused_plan"] = (
                key,
                params,
                units,
                fused.Plan(self.sizes, params, units),
            )
        transposed = [self._transposed(k) for k in range(1, self.num_layers)]
        return hit[3], transposed, units[0]

    def _relax_fused(self, x, state, beta, target, sweeps, tol, tile) -> Relaxation:
        """:meth:`relax` through :func:`npusim.circuits.fused.relax` (same semantics)."""
        from npusim.circuits import fused

        n0 = x.shape[0]
        batch = n0 * tile
        rows = n0 if n0 % fused.LANES == 0 else batch  # whole chunks are reused by each tile
        plan, transposed, den = self._fused_weights(self._fused_units())
        scale, offset = self._fused_output(beta, target, batch, None)
        out, done, residual = fused.relax(
            plan, transposed, den, self._fused_base(x, rows), batch,
            None if state is None else list(state), scale, offset, sweeps=sweeps, tol=tol,
        )  # fmt: skip
        _check_finite(residual)
        return Relaxation(state=out, residual=residual, sweeps=done)

    def predict(self, x: Tensor, sweeps: int = 15) -> Tensor:
        """Class predicted for each sample: argmax of the free equilibrium's output."""
        return self.output(self.relax(x, sweeps=sweeps).state).argmax(1)

    def load_params(self, params: list[Tensor]) -> None:
        for p, q in zip(self.params(), params, strict=True):
            if p.shape != q.shape:
                raise ValueError(f"parameter shape {tuple(q.shape)} != {tuple(p.shape)}")
            p.copy_(q)

    def buffers(self) -> list[Tensor]:
        """No state beyond the parameters."""
        return []

    def load_buffers(self, buffers: list[Tensor]) -> None:
        if buffers:
            raise ValueError(f"{type(self).__name__} holds no buffers, got {len(buffers)}")

    def _output_operator(
        self, beta: float | Tensor, target: Tensor | None, input_drive: Tensor
    ) -> tuple[Tensor | None, Tensor, tuple[Tensor, Tensor] | None]:
        """``(W, b, post)`` such that the output layer's exact minimiser is
        ``act(s_{L−1} Wᵀ + b)``, then ``d·scale + offset`` row by row if ``post`` is given.

        With output curvature ``c``, the minimiser of ``½c·s² − d·s + β·½(s − t)²`` is
        ``(d + βt)/(c + β)``, and ``d = s_{L−1} W_{L−1} + b_{L−1}`` is affine, so a scalar β
        folds into one weight matrix and one bias per relaxation (``β = ∞`` clamps the
        output to ``t``); a per-sample β is applied after the product (``post``). ``W`` is
        ``None`` when there is no hidden layer; ``b`` is then the input's drive.
        """
        c = self._output_curvature()
        L = self.num_layers
        w, b = (None, input_drive) if L == 1 else (self._transposed(L - 1), self.biases[L - 1])
        if isinstance(beta, Tensor):
            scale = 1.0 / (c + beta.to(self.dtype))
            return w, b, (scale, beta * target.to(self.dtype) * scale)
        if beta == 0.0:
            scale, offset = 1.0 / c, None
        elif math.isinf(beta):
            scale, offset = 0.0 * c, target.to(self.dtype)
        else:
            scale, offset = 1.0 / (c + beta), (beta / (c + beta)) * target.to(self.dtype)
        if not (isinstance(scale, float) and scale == 1.0):
            if w is not None:
                w = w * (scale[:, None] if isinstance(scale, Tensor) else scale)
            b = b * scale
        return w, b if offset is None else b + offset, None
