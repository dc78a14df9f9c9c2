"""Charts (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def check_plot_path(path: str | Path) -> None:
    """A chart path whose suffix matplotlib can write (checked before any simulation runs)."""
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in formats:
        raise ValueError(f"--plot {path}: cannot write a '.{suffix}' chart; use one of {', '.join(sorted(formats))}")


def compare_chart(model: str, rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Throughput and perf/W per chip (one bar group per phase)."""
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    chips = list(dict.fromkeys(r["chip"] for r in rows))
    fig, axes = plt.subplots(len(phases), 2, figsize=(11, 3.2 * len(phases)), squeeze=False)
    for i, ph in enumerate(phases):
        sub = {r["chip"]: r for r in rows if r["phase"] == ph}
        unit = next(iter(sub.values()))["item_unit"]
        for j, (key, label) in enumerate((("throughput_per_s", f"{unit}s/s"), ("perf_per_w", f"{unit}s/J"))):
            ax = axes[i][j]
            vals = [sub[c][key] or 0.0 for c in chips]
            colors = ["#1f77b4" if c.startswith("mtia") else "#7f7f7f" for c in chips]
            ax.bar(chips, vals, color=colors)
            ax.set_title(f"{ph}: {label}" + (" (higher is better)" if j == 0 else ""))
            ax.tick_params(axis="x", rotation=30)
            for k, c in enumerate(chips):
                if not sub[c]["fits_in_memory"]:
                    ax.annotate("does not fit", (k, vals[k]), ha="center", va="bottom", fontsize=7, color="red")
    fig.suptitle(f"{model}: MTIA (blue) vs reference chips (grey), mtiasim analytical engine")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
