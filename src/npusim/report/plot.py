"""PNG plots: the NPU's energy breakdown per training sample and per inference; a figure of
merit against time after programming (drift)."""

from __future__ import annotations

from pathlib import Path


def breakdown_png(report: dict, path: str | Path) -> Path:
    """Write a two-panel stacked-bar chart (J per training sample, J per inference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    npu = report["systems"]["NPU EqProp"]
    ref = report["systems"].get(report.get("reference_gpu", ""), {})
    kinds = [k for k in ("train", "inference") if k in npu]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 4.5), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    terms = list(report["term_notes"])
    for ax, kind in zip(axes[0], kinds, strict=False):
        parts = npu[kind]["breakdown_j"]
        bottom = 0.0
        for i, term in enumerate(terms):
            v = parts.get(term, 0.0) * 1e9  # J -> nJ
            ax.bar(["NPU"], [v], bottom=bottom, color=colors[i % 10], label=term)
            bottom += v
        label = "training sample" if kind == "train" else "inference"
        ax.set_ylabel(f"energy per {label} (nJ)")
        r = ref.get("ratio_vs_npu", {}).get(kind)
        title = f"per {label}"
        if r is not None:
            title += f"\n{report.get('reference_gpu', 'GPU')}: {r:.3g}× NPU"
        ax.set_title(title, fontsize=9)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def after_drift_png(
    after: dict[str, dict[str, float]],
    seconds: dict[str, float],
    path: str | Path,
    *,
    digital: float,
    margin: float,
    margin_label: str,
    ylabel: str,
    label: str,
    title: str,
) -> Path:
    """Mean ± s.d. of a figure (``after[time] = {"mean", "std"}``, already in plot units) at
    each time after programming (``seconds[time]``, s; log axis), with the digital model's
    value and the target ``digital + margin`` as lines. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npusim.runtime.io import atomic_write

    labels = list(after)
    ts = [max(float(seconds[k]), 1.0) for k in labels]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(
        ts,
        [after[k]["mean"] for k in labels],
        yerr=[after[k]["std"] for k in labels],
        marker="o",
        capsize=3,
        label=label,
    )
    ax.axhline(digital, color="gray", ls="--", label="digital")
    ax.axhline(digital + margin, color="gray", ls=":", label=margin_label)
    ax.set_xscale("log")
    ax.set_xticks(ts, labels)
    ax.set_xlabel("time after programming")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return Path(path)


def compute_png(claims: dict, path: str | Path) -> Path:
    """Throughput (operations/s) against power (W), log-log: the published chips at their own
    reported peaks, and this run's work on the NPU, the GPU and the phone NPU (one unit each,
    and the NPU scaled to the GPU's area and power), per training sample and per inference.
    Dotted lines: constant efficiency (TOPS/W). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npusim.runtime.io import atomic_write

    fig, ax = plt.subplots(figsize=(7, 5))
    for p in claims["published"]:
        ax.scatter(p["power_w"], p["ops_per_s"], marker="*", s=120, color="k", zorder=3)
        ax.annotate(p["name"], (p["power_w"], p["ops_per_s"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    colors = plt.get_cmap("tab10").colors
    markers = {"train": "o", "inference": "s"}
    for i, (name, kinds) in enumerate(claims["systems"].items()):
        for kind, s in kinds.items():
            label = f"{name}, per {'training sample' if kind == 'train' else 'inference'}"
            ax.scatter(s["power_w"], s["ops_per_s"]["one_unit"], marker=markers[kind],
                       color=colors[i], label=label, zorder=2)  # fmt: skip
            if name == "NPU":
                budget_w = claims["budget_power_w"][kind]
                area_w = s["power_w"] * s["samples_per_s"]["copies_equal_area"]
                ax.scatter([area_w, budget_w],
                           [s["ops_per_s"]["equal_area"], s["ops_per_s"]["equal_power"]],
                           marker=markers[kind], facecolors="none", edgecolors=colors[i],
                           s=70, zorder=2)  # fmt: skip
                for x, y, txt in (
                    (area_w, s["ops_per_s"]["equal_area"], "NPU at GPU area"),
                    (budget_w, s["ops_per_s"]["equal_power"], "NPU at GPU power"),
                ):
                    ax.annotate(f"{txt} ({kind})", (x, y), fontsize=6, xytext=(4, -8),
                                textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for eff in (1e12, 1e13, 1e14):
        ax.plot([x0, x1], [eff * x0, eff * x1], ls=":", lw=0.7, color="gray")
        ax.annotate(f"{eff / 1e12:g} TOPS/W", (x1, eff * x1), fontsize=6, color="gray",
                    xytext=(-50, -10), textcoords="offset points")  # fmt: skip
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("power (W)")
    ax.set_ylabel("operations per second (effective on this work; published: peak)")
    ax.set_title(
        f"Compute: this run's work vs published chips (target {claims['target_ratio']:g}x "
        f"the {claims['reference_gpu']})",
        fontsize=9,
    )
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return Path(path)
