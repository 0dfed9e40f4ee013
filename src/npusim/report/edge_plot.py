"""PNG plots of ``npusim edge``: accuracy against stream samples seen (new and original data;
the chip, backprop on the phone NPU, the frozen chip) and energy per update along the stream."""

from __future__ import annotations

from pathlib import Path


def edge_accuracy_png(res: dict, path: str | Path) -> Path:
    """Accuracy (%) on the held-out new-distribution and original sets against samples seen,
    for the learning chip and each baseline in ``res["baselines"]``. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npusim.runtime.io import atomic_write

    rows = [(f"{res['chip']} chip, learning", res["curve"], "C0", "-")]
    base = res.get("baselines", {})
    if "phone_npu_backprop" in base:
        rows.append(("phone NPU, backprop", base["phone_npu_backprop"]["curve"], "C1", "-"))
    if "frozen_chip" in base:
        rows.append(("frozen chip", base["frozen_chip"]["curve"], "C7", ":"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, c, color, ls in rows:
        ax.plot(c["samples"], [100 * v for v in c["accuracy_new"]], color=color, ls=ls,
                marker="o", ms=3, label=f"{label}: new")  # fmt: skip
        ax.plot(c["samples"], [100 * v for v in c["accuracy_old"]], color=color, ls=ls,
                marker="s", ms=3, alpha=0.55, label=f"{label}: original")  # fmt: skip
    ax.set_xlabel("stream samples seen")
    ax.set_ylabel("accuracy (%)")
    replay = res["replay"]["samples"]
    ax.set_title(
        f"stream '{res['stream']}'" + (f", replay buffer {replay}" if replay else ""), fontsize=9
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def edge_energy_png(res: dict, path: str | Path) -> Path:
    """Energy per update (nJ, log axis) of the learning chip over each stretch of the stream,
    and the phone NPU's backprop update as a line. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npusim.runtime.io import atomic_write

    c = res["curve"]
    pts = [(s, e) for s, e in zip(c["samples"], c["energy_per_update_j"]) if e is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in pts], [1e9 * e for _, e in pts], marker="o", ms=3,
            label=f"{res['chip']} chip (EqProp on the devices)")  # fmt: skip
    phone = res.get("baselines", {}).get("phone_npu_backprop")
    if phone is not None:
        ax.axhline(1e9 * phone["energy_per_update_j"], color="C1", ls="--",
                   label="phone NPU, backprop (FP16)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("stream samples seen")
    ax.set_ylabel("energy per update (nJ)")
    ax.set_title(
        f"{1e3 * res['power_w']:.3g} mW: {res['updates_per_s']:.3g} updates/s "
        f"(limited by {res['rate_limited_by']})",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return Path(path)
