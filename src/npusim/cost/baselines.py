"""Baselines doing the same work: the same MLP trained by backprop on a GPU and on a phone NPU.

FLOPs are counted from the network's weight matrices (a layered network's layer sizes, or its
arrays: a convolution's matrix counted once per output position; a multiply-add is 2 FLOPs;
training ≈ 3× forward: forward, backward to activations, backward to weights). GPU energy per
FLOP = board power / (dense peak × utilisation), which already includes on-chip caches;
off-chip (HBM) traffic adds bytes × energy per byte. Both choices favour the GPU: small MLPs
reach far lower utilisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from npusim.core.interfaces import ArrayShape, dense_arrays
from npusim.runtime.ledger import Ledger, Shapes, as_arrays

H100_DS = "NVIDIA H100 Tensor Core GPU datasheet (2023), SXM5"
A100_DS = "NVIDIA A100 Tensor Core GPU datasheet (2021), SXM4 80 GB"
PALM_MFU = "utilisation 0.4: large-model training reaches ~46% MFU (Chowdhery et al., PaLM, 2022)"
HBM = "HBM2 ~3.9 pJ/bit access energy (O'Connor et al., 'Fine-grained DRAM', MICRO 2017)"
SAMSUNG_NPU = (
    "Park et al., 'A multi-mode 8k-MAC NPU ... in 4-nm flagship mobile SoC', IEEE JSSC 58(1), 2023"
)


def logical_arrays(ledger: Ledger) -> list[ArrayShape]:
    """The network the baselines run for a ledger: a layered network of its logical sizes
    (the DRN's physical input layer duplicates the logical one), else its arrays."""
    arrays = ledger.array_shapes()
    if ledger.logical_sizes and arrays == dense_arrays(ledger.sizes):
        return dense_arrays(ledger.logical_sizes)
    return arrays


def forward_flops(sizes_or_arrays: Shapes) -> int:
    """FLOPs of one sample's forward pass: Σ uses·(2·rows·cols + cols) over the weight
    matrices (a dense MLP: 2·Σ n_k·n_{k+1} + biases)."""
    return sum(a.uses * (2 * a.rows * a.cols + a.cols) for a in as_arrays(sizes_or_arrays))


def training_flops(sizes_or_arrays: Shapes) -> int:
    """FLOPs of one sample's backprop training step: 3 × forward (weight update excluded)."""
    return 3 * forward_flops(sizes_or_arrays)


def param_count(sizes_or_arrays: Shapes) -> int:
    """Weights and biases: Σ rows·cols + cols over the weight matrices."""
    return sum(a.rows * a.cols + a.cols for a in as_arrays(sizes_or_arrays))


def _input_units(sizes_or_arrays: Shapes) -> int:
    return as_arrays(sizes_or_arrays)[0].in_units


def _activations(sizes_or_arrays: Shapes) -> int:
    """Activations per sample: Σ out_units (a dense MLP: every layer but the input)."""
    return sum(a.out_units for a in as_arrays(sizes_or_arrays))


def training_bytes(
    sizes_or_arrays: Shapes, batch: int, bytes_per_value: int, cache_bytes: float = 0.0
) -> float:
    """Off-chip traffic (B) per training sample. The input is read once. Parameters are read
    twice, the gradient written, SGD reads weights and gradient and writes weights (6 × params
    per step, shared by the batch) and activations are written forward and read backward, but
    only when parameters and activations do not fit in ``cache_bytes`` of on-chip cache (whose
    energy is already inside the board power)."""
    params = param_count(sizes_or_arrays) * bytes_per_value
    acts = 2 * _activations(sizes_or_arrays) * bytes_per_value * batch
    off_chip = _input_units(sizes_or_arrays) * bytes_per_value
    if 3 * params + acts > cache_bytes:
        off_chip += (6 * params + acts) / max(batch, 1)
    return off_chip


def inference_bytes(
    sizes_or_arrays: Shapes, batch: int, bytes_per_value: int, cache_bytes: float = 0.0
) -> float:
    """Off-chip traffic (B) per inference: the input, plus parameters once per batch when
    they do not fit in ``cache_bytes``."""
    params = param_count(sizes_or_arrays) * bytes_per_value
    extra = params / max(batch, 1) if params > cache_bytes else 0.0
    return _input_units(sizes_or_arrays) * bytes_per_value + extra


@dataclass(frozen=True)
class GpuPreset:
    """A GPU described by its datasheet: board power (W), dense peak (FLOP/s) at a precision,
    an assumed utilisation, HBM energy (J/B) and die area (m²); ``sources`` cites each."""

    name: str
    board_power_w: float
    dense_peak_flops: float
    precision: str
    bytes_per_value: int
    utilisation: float
    mem_j_per_byte: float
    cache_bytes: float
    die_area_m2: float
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def j_per_flop(self) -> float:
        return self.board_power_w / (self.dense_peak_flops * self.utilisation)

    def cost(self, sizes_or_arrays: Shapes, batch: int) -> dict[str, dict[str, float]]:
        """Energy (J) by term and time (s) per training sample and per inference of the network
        (its arrays, or a layered network's layer sizes)."""
        arrays = as_arrays(sizes_or_arrays)
        out = {}
        for kind, flops, nbytes in (
            (
                "train",
                training_flops(arrays),
                training_bytes(arrays, batch, self.bytes_per_value, self.cache_bytes),
            ),
            (
                "inference",
                forward_flops(arrays),
                inference_bytes(arrays, batch, self.bytes_per_value, self.cache_bytes),
            ),
        ):
            out[kind] = {
                "energy_j": {
                    "compute": flops * self.j_per_flop,
                    "memory": nbytes * self.mem_j_per_byte,
                },
                "time_s": flops / (self.dense_peak_flops * self.utilisation),
                "flops": flops,
                "bytes": nbytes,
            }
        return out


H100_SXM = GpuPreset(
    name="H100 SXM",
    board_power_w=700.0,
    dense_peak_flops=989.4e12,
    precision="bf16",
    bytes_per_value=2,
    utilisation=0.4,
    mem_j_per_byte=3.9e-12 * 8,
    cache_bytes=50e6,
    die_area_m2=814e-6,
    sources={
        "board_power_w": H100_DS + ": max TDP 700 W",
        "dense_peak_flops": H100_DS + ": BF16 1979 TFLOPS with sparsity, i.e. 989.4 dense",
        "utilisation": PALM_MFU,
        "mem_j_per_byte": HBM,
        "cache_bytes": "NVIDIA H100 (Hopper) architecture whitepaper, 2022: 50 MB L2 cache",
        "die_area_m2": "NVIDIA H100 (Hopper) architecture whitepaper, 2022: 814 mm^2 die",
    },
)

A100_SXM = GpuPreset(
    name="A100 SXM",
    board_power_w=400.0,
    dense_peak_flops=312e12,
    precision="bf16",
    bytes_per_value=2,
    utilisation=0.4,
    mem_j_per_byte=3.9e-12 * 8,
    cache_bytes=40e6,
    die_area_m2=826e-6,
    sources={
        "board_power_w": A100_DS + ": max TDP 400 W",
        "dense_peak_flops": A100_DS + ": BF16 312 TFLOPS dense",
        "utilisation": PALM_MFU,
        "mem_j_per_byte": HBM,
        "cache_bytes": "NVIDIA A100 Tensor Core GPU architecture whitepaper, 2020: 40 MB L2",
        "die_area_m2": "NVIDIA A100 Tensor Core GPU architecture whitepaper, 2020: 826 mm^2 die",
    },
)

GPUS: dict[str, GpuPreset] = {"h100": H100_SXM, "a100": A100_SXM}


@dataclass(frozen=True)
class PhoneNpuPreset:
    """A phone NPU: measured efficiency INT8 (op/J) for inference, FP16 (FLOP/J) for training."""

    name: str = "Samsung 4 nm mobile NPU"
    int8_ops_per_j: float = 11.59e12
    fp16_flops_per_j: float = 4.26e12
    peak_int8_ops: float = 8192 * 2 * 1.0e9
    utilisation: float = 0.5
    int8_ops_per_s_per_m2: float = 3.45e12 / 1e-6
    sources: dict[str, str] = field(
        default_factory=lambda: {
            "int8_ops_per_j": SAMSUNG_NPU + ": 11.59 TOPS/W INT8 (MobileNetEdgeTPU); class "
            "11-14 TOPS/W, cf. 13.6 TOPS/W Samsung 5 nm NPU (Jang et al., ISCA 2021)",
            "fp16_flops_per_j": SAMSUNG_NPU + ": 4.26 TFLOPS/W FP16 (DeepLabV3)",
            "peak_int8_ops": SAMSUNG_NPU + ": 8192 MACs x 2 ops; 1 GHz clock is an assumption",
            "utilisation": "assumption: half the MACs busy on a small dense MLP",
            "int8_ops_per_s_per_m2": SAMSUNG_NPU + ": 3.45 TOPS/mm^2 INT8",
        }
    )

    @property
    def area_m2(self) -> float:
        return self.peak_int8_ops / self.int8_ops_per_s_per_m2

    def cost(self, sizes_or_arrays: Shapes, dram_j_per_byte: float = 0.0) -> dict[str, dict]:
        """Energy (J) and time (s) per training sample (FP16 backprop) and per INT8 inference.
        Parameters stay in on-chip SRAM (counted in the measured efficiency); each sample's
        input is read from DRAM at ``dram_j_per_byte`` (1 B INT8 / 2 B FP16 per value).
        FP16 runs at a quarter of the INT8 rate (assumption: 16b MACs built from 8b ones). The
        network: its arrays, or a layered network's layer sizes."""
        arrays = as_arrays(sizes_or_arrays)
        f, t, n_in = forward_flops(arrays), training_flops(arrays), arrays[0].in_units
        rate = self.peak_int8_ops * self.utilisation
        return {
            "train": {
                "energy_j": {
                    "compute": t / self.fp16_flops_per_j,
                    "memory": 2 * n_in * dram_j_per_byte,
                },
                "time_s": 4 * t / rate,
                "flops": t,
            },
            "inference": {
                "energy_j": {
                    "compute": f / self.int8_ops_per_j,
                    "memory": n_in * dram_j_per_byte,
                },
                "time_s": f / rate,
                "flops": f,
            },
        }


PHONE_NPU = PhoneNpuPreset()


def _nvml():
    try:
        import pynvml  # provided by the nvidia-ml-py package
    except ImportError as e:
        raise RuntimeError(
            "measured GPU energy needs NVML bindings: `pip install nvidia-ml-py` "
            "(and an NVIDIA GPU with a driver); use the datasheet presets otherwise"
        ) from e
    return pynvml


def measure_energy_j(fn: Callable[[], object], device_index: int = 0) -> tuple[float, float]:
    """Run ``fn`` and return (energy J, seconds) from the GPU's cumulative energy counter
    (NVML ``nvmlDeviceGetTotalEnergyConsumption``, mJ; Volta and newer)."""
    nv = _nvml()
    import torch

    nv.nvmlInit()
    try:
        h = nv.nvmlDeviceGetHandleByIndex(device_index)
        torch.cuda.synchronize()
        e0, t0 = nv.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
        fn()
        torch.cuda.synchronize()
        e1, t1 = nv.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
    finally:
        nv.nvmlShutdown()
    return (e1 - e0) * 1e-3, t1 - t0


def measure_backprop_training(
    sizes: list[int], batch: int = 64, min_seconds: float = 5.0, dtype: str = "bfloat16"
) -> dict[str, float]:
    """Measured J and s per training sample of the same MLP trained by backprop with SGD on
    random data on the local GPU (hard-sigmoid activations, MSE loss), over at least
    ``min_seconds`` so the millijoule counter resolves it. Includes idle board power."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("measured GPU mode needs a CUDA GPU; none is visible")
    _nvml()
    dev, dt = torch.device("cuda"), getattr(torch, dtype)
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [torch.nn.Linear(a, b), torch.nn.Hardsigmoid()]
    model = torch.nn.Sequential(*layers[:-1]).to(dev, dt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, sizes[0], device=dev, dtype=dt)
    y = torch.rand(batch, sizes[-1], device=dev, dtype=dt)

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    run(50)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    run(200)
    torch.cuda.synchronize()
    steps = max(200, int(min_seconds / max((time.perf_counter() - t0) / 200, 1e-9)))
    joules, seconds = measure_energy_j(lambda: run(steps))
    n = batch * steps
    return {"energy_j": joules / n, "time_s": seconds / n, "steps": steps, "batch": batch}
