"""Helpers every task's ``report()`` shares: mean ± std over seeds and figure output."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Optional, Tuple

__all__ = ["mean_std", "pyplot", "save_figure", "log_error_bars"]


def mean_std(values: Iterable[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of the finite-or-inf
    values, NaN and None skipped; ``(nan, nan)`` when nothing is left."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, s


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib (the bench extra) is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, out_dir, name: str, dpi: int = 110) -> Optional[str]:
    """Save ``fig`` as ``out_dir/name``, close it, and return ``name`` for the markdown link."""
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(Path(out_dir) / name, dpi=dpi)
    if plt is not None:
        plt.close(fig)
    return name


def log_error_bars(means, stds, lowest) -> Tuple[list, list]:
    """``(lower, upper)`` bar lengths for ``ax.bar(..., yerr=[lower, upper])`` on a log axis.

    ``mean - std`` can be <= 0, which a log axis cannot draw (the bar runs off the plot): the
    lower bar then stops at the lowest value observed over the seeds, never below it.
    """
    lower = []
    for m, sd, low in zip(means, stds, lowest):
        if not (math.isfinite(m) and m > 0):
            lower.append(0.0)
        elif m - sd > 0:
            lower.append(sd)
        else:
            lower.append(m - low if 0 < low < m else 0.0)
    return lower, list(stds)
