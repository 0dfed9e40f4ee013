"""What the compute claims check holds the chip against: published chips' own reported peak
figures (for the plot) and the limits of each timing assumption, each with its source."""

from __future__ import annotations

from dataclasses import dataclass

from npusim.cost.baselines import H100_DS
from npusim.cost.constants import cited, const

HOPPER_WP = "NVIDIA H100 (Hopper) architecture whitepaper, 2022: 814 mm^2 die"

# Published chips with their own reported peak figures (operations/s, W), for the plot.
PUBLISHED: tuple[dict[str, object], ...] = (
    {
        "name": "IBM HERMES (64-core PCM)",
        "ops_per_s": 63.1e12,
        "power_w": 63.1e12 / 9.76e12,
        "precision": "8-bit MVM, one-phase read",
        "source": "Le Gallo et al., 'A 64-core mixed-signal in-memory compute chip based on "
        "phase-change memory for deep neural network inference', Nat. Electron. 6, 680 (2023): "
        "63.1 TOPS at 9.76 TOPS/W (power = 63.1 / 9.76 W)",
    },
    {
        "name": "Mythic M1076",
        "ops_per_s": 25e12,
        "power_w": 3.0,
        "precision": "INT8 analog (flash)",
        "source": "Mythic M1076 Analog Matrix Processor product brief (2021): up to 25 TOPS, "
        "~3 W typical (3-4 W quoted elsewhere)",
    },
    {
        "name": "H100 SXM dense INT8",
        "ops_per_s": 1979e12,
        "power_w": 700.0,
        "precision": "INT8 tensor core, dense",
        "source": H100_DS + ": INT8 3,958 TOPS with sparsity, i.e. 1,979 dense; max TDP 700 W",
    },
    {
        "name": "H100 SXM dense BF16",
        "ops_per_s": 989.4e12,
        "power_w": 700.0,
        "precision": "BF16 tensor core, dense",
        "source": H100_DS + ": BF16 1,979 TFLOPS with sparsity, i.e. 989.4 dense; max TDP 700 W",
    },
)


@dataclass(frozen=True)
class ComputeLimits:
    """Physical or published limits the compute check holds each timing assumption against."""

    settle_s: float = const(
        8.2e-12,
        "s",
        "RC of a 128-cell line, 128 x 2.5 Ohm x 0.2 fF x 128 (the presets' own settle_tau "
        "estimate, amplifier not counted: a floor that favours the chip)",
    )
    adc_rate_hz: float = const(
        1e10,
        "Hz",
        "assumption: 10 GS/s for one 8-bit ADC channel (~8x the ISAAC ADC's 1.28 GS/s, Shafiee "
        "et al., ISCA 2016); faster conversion is time-interleaving, i.e. more ADCs",
    )
    read_time_s: float = const(
        1.082e-10,
        "s",
        "one settle at the line-RC floor plus one conversion at the ADC-rate limit (above)",
    )
    pulse_width_s: float = const(
        1e-10,
        "s",
        "Li et al., Nat. Commun. 9, 2385 (2018), introduction: memristors switch faster than "
        "100 ps (their ref. 34)",
    )
    digital_ops_per_s_per_m2: float = const(
        1979e12 / 814e-6,
        "op/s/m2",
        "the H100's dense INT8 rate per die area, 1,979 TOPS / 814 mm^2 ("
        + H100_DS
        + "; "
        + HOPPER_WP
        + "): a digital periphery of the same silicon cannot do more per area",
    )
    reticle_m2: float = const(
        858e-6,
        "m2",
        "lithography reticle field 26 mm x 33 mm = 858 mm^2, the largest single die (the "
        "H100's 814 mm^2 is close to it)",
    )

    def table(self) -> dict[str, dict[str, object]]:
        """``{name: {value, unit, source}}`` for every limit."""
        return cited(self)
