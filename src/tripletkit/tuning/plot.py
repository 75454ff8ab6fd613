"""The margin-tuning curve as a PNG: validation MAP@R against the margin, one line per distance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tripletkit.files import write_atomic

__all__ = ["plot_margin_tuning"]


def plot_margin_tuning(
    trials: Sequence[Any],
    best: Any,
    path: str | Path,
    suggestion: dict[str, Any] | None = None,
) -> Path:
    """Draw the trials (objects or dicts with ``margin``, ``distance``, ``status``, ``score``,
    ``score_before``) into ``path`` (written atomically) and return it.

    The margin axis is logarithmic when the grid spans more than a factor of 4 (grids are usually
    geometric). Failed trials are left out; the best trial gets a star, the untrained model's score
    a dotted line per distance, and a suggested margin a vertical line.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def get(item: Any, key: str) -> Any:
        return item[key] if isinstance(item, dict) else getattr(item, key)

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    done = [t for t in trials if get(t, "status") == "ok"]
    distances = list(dict.fromkeys(get(t, "distance") for t in trials))
    for distance in distances:
        points = sorted(
            (get(t, "margin"), get(t, "score"), get(t, "score_before"))
            for t in done
            if get(t, "distance") == distance
        )
        if not points:
            continue
        line = axes.plot(
            [p[0] for p in points], [p[1] for p in points], marker="o", label=f"{distance}"
        )[0]
        befores = [p[2] for p in points if p[2] is not None]
        if befores:
            axes.axhline(
                sum(befores) / len(befores),
                color=line.get_color(),
                linestyle=":",
                label=f"{distance}: untrained",
            )
    if best is not None:
        axes.plot(
            [get(best, "margin")],
            [get(best, "score")],
            marker="*",
            markersize=16,
            color="gold",
            markeredgecolor="black",
            linestyle="none",
            label=f"best: margin {get(best, 'margin'):g} ({get(best, 'distance')})",
        )
    if suggestion is not None:
        axes.axvline(
            suggestion["margin"],
            color="grey",
            linestyle="--",
            label=f"suggested: {suggestion['margin']:.3g} ({suggestion['distance']})",
        )
    margins = [get(t, "margin") for t in done if get(t, "margin") > 0]
    if margins and max(margins) / min(margins) > 4 and len(margins) == len(done):
        axes.set_xscale("log")
    axes.set_xlabel("margin α")
    axes.set_ylabel("validation MAP@R (best epoch)")
    axes.set_title("Margin tuning: short runs scored on held-out classes")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    path = Path(path)
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))
    plt.close(figure)
    return path
