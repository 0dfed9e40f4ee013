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
