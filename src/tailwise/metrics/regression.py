"""Shot-wise errors for imbalanced regression (Yang et al., "Delving into Deep Imbalanced
Regression", ICML 2021; github YyzHarry/imbalanced-regression, ``shot_metrics``).

The label range is cut into bins (the official AgeDB/IMDB-WIKI code uses one bin per integer
age). A bin is *many-shot* if it holds ``> many`` (100) training labels, *few-shot* if ``< few``
(20), *medium-shot* otherwise; every test sample belongs to its label's bin. Per group we report
the sample MSE, MAE and geometric mean of absolute errors ``exp(mean(log |e|))`` (as
``scipy.stats.gmean``; 0 as soon as one error is exactly 0). ``balanced_mse`` / ``balanced_mae``
average the per-bin mean errors over bins with test samples (the balanced metrics of Ren et al.,
"Balanced MSE", CVPR 2022).
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import Tensor

from .._validation import check_finite, check_tensor
from .classification import _check_thresholds

__all__ = ["regression_bin_edges", "shot_regression_errors"]

# Per-bin sufficient statistics; all are sums, so ranks combine them with one all-reduce.
_STATS = ("count", "sq", "abs", "log_abs", "zeros")


def _as_values(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a 1-D tensor or sequence of numbers") from exc
    check_tensor(x, name)
    x = x.detach()
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D (N,) or (N, 1), got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.to(torch.float64)
    check_finite(x, name)
    return x


def regression_bin_edges(train_labels, bins=None) -> Tensor:
    """Bin edges (float64, increasing, ``B + 1`` values) for :func:`shot_regression_errors`.

    ``bins=None``: unit bins ``[k, k + 1)`` over the integers from ``floor(min)`` to
    ``floor(max)`` of ``train_labels`` (the official per-integer-label bins). An int ``B``: ``B``
    equal-width bins over ``[min, max]`` (the last bin closed, like ``numpy.histogram``). A 1-D
    tensor / sequence: the edges themselves.
    """
    train = _as_values(train_labels, "train_labels")
    if train.numel() == 0:
        raise ValueError("train_labels must not be empty")
    if bins is None:
        lo, hi = math.floor(float(train.min())), math.floor(float(train.max()))
        return torch.arange(lo, hi + 2, dtype=torch.float64)
    if isinstance(bins, int) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        lo, hi = float(train.min()), float(train.max())
        if hi == lo:
            hi = lo + 1.0
        return torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    edges = _as_values(bins, "bins")
    if edges.numel() < 2 or bool((edges[1:] <= edges[:-1]).any()):
        raise ValueError(f"bins must be an int or at least 2 strictly increasing edges, got {edges.tolist()[:10]}")
    return edges


def bin_index(values: Tensor, edges: Tensor, close_last: bool) -> Tensor:
    """Bin of each value: ``0..B-1`` inside, ``B`` below the first edge, ``B + 1`` above the last."""
    edges = edges.to(values.device)
    num_bins = edges.numel() - 1
    idx = torch.bucketize(values, edges, right=True) - 1
    if close_last:
        idx = torch.where(values == edges[-1], torch.full_like(idx, num_bins - 1), idx)
    idx = torch.where(idx >= num_bins, torch.full_like(idx, num_bins + 1), idx)
    return torch.where(values < edges[0], torch.full_like(idx, num_bins), idx)


def bin_statistics(pred: Tensor, target: Tensor, edges: Tensor, close_last: bool) -> Dict[str, Tensor]:
    """Per-bin sums over test samples (``B + 2`` entries each, see :func:`bin_index`)."""
    size = edges.numel() + 1
    idx = bin_index(target, edges, close_last)
    err = (pred - target).abs()
    nonzero = err > 0
    log_abs = torch.where(nonzero, torch.log(torch.where(nonzero, err, torch.ones_like(err))), torch.zeros_like(err))

    def total(v):
        return torch.zeros(size, dtype=torch.float64, device=target.device).index_add_(0, idx, v)

    return {"count": total(torch.ones_like(err)), "sq": total(err * err), "abs": total(err),
            "log_abs": total(log_abs), "zeros": total((~nonzero).to(torch.float64))}


def errors_from_statistics(stats: Dict[str, Tensor], train_counts: Tensor, many: float = 100,
                           few: float = 20) -> Dict:
    """Finish :func:`shot_regression_errors` from summed per-bin statistics."""
    stats = {k: v.to(torch.float64).cpu() for k, v in stats.items()}
    train_counts = train_counts.to(torch.float64).cpu()
    is_many, is_few = train_counts > many, train_counts < few
    groups = {"many": is_many, "medium": ~is_many & ~is_few, "few": is_few,
              "overall": torch.ones_like(is_many)}

    def summarise(mask):
        n = float(stats["count"][mask].sum())
        if n == 0:
            return {"mse": math.nan, "mae": math.nan, "gmean": math.nan, "count": 0}
        if float(stats["zeros"][mask].sum()) > 0:
            gmean = 0.0
        else:
            gmean = math.exp(float(stats["log_abs"][mask].sum()) / n)
        return {"mse": float(stats["sq"][mask].sum()) / n, "mae": float(stats["abs"][mask].sum()) / n,
                "gmean": gmean, "count": int(n)}

    out = {name: summarise(mask) for name, mask in groups.items()}
    used = stats["count"] > 0
    if bool(used.any()):
        out["balanced_mse"] = float((stats["sq"][used] / stats["count"][used]).mean())
        out["balanced_mae"] = float((stats["abs"][used] / stats["count"][used]).mean())
    else:
        out["balanced_mse"] = out["balanced_mae"] = math.nan
    return out


def train_bin_counts(train_labels, edges: Tensor, close_last: bool) -> Tensor:
    train = _as_values(train_labels, "train_labels")
    return torch.bincount(bin_index(train, edges, close_last).cpu(), minlength=edges.numel() + 1).to(torch.float64)


def shot_regression_errors(pred, target, train_labels, bins=None, many: float = 100,
                           few: float = 20) -> Dict:
    """MSE, MAE and geometric-mean error for many / medium / few-shot label bins (DIR protocol).

    Args:
        pred: predictions ``(N,)`` or ``(N, 1)``.
        target: true labels, same length.
        train_labels: the training labels; their histogram decides each bin's shot group.
        bins: ``None`` (default) for unit bins ``[k, k+1)`` at the integers, as the official code
            (integer ages); an int for that many equal-width bins over the training range; or a
            sequence of increasing edges.
        many, few: a bin with ``> many`` training labels is many-shot, ``< few`` few-shot
            (defaults 100 and 20, official).

    Returns:
        ``{"many": {...}, "medium": {...}, "few": {...}, "overall": {...}, "balanced_mse": float,
        "balanced_mae": float}``, each group a dict ``{"mse", "mae", "gmean", "count"}`` of Python
        numbers. A group without test samples has NaN errors and count 0. Labels outside the
        bin edges are pooled into one underflow and one overflow bin (with ``bins=None`` or an
        int no training label is outside, so such test labels are zero-shot, i.e. few).

    Example:
        >>> train = torch.tensor([0.0] * 150 + [1.0] * 50 + [2.0] * 5)
        >>> r = shot_regression_errors(torch.tensor([0.5, 1.0, 4.0]), torch.tensor([0.0, 1.0, 2.0]), train)
        >>> r["many"]["mse"], r["medium"]["gmean"], r["few"]["mae"], r["balanced_mse"]
        (0.25, 0.0, 2.0, 1.4166666666666667)
    """
    pred = _as_values(pred, "pred")
    target = _as_values(target, "target").to(pred.device)
    if pred.numel() != target.numel():
        raise ValueError(f"pred and target must have the same length N, got {pred.numel()} and {target.numel()}")
    _check_thresholds(many, few)
    close_last = isinstance(bins, int) and not isinstance(bins, bool)
    edges = regression_bin_edges(train_labels, bins)
    counts = train_bin_counts(train_labels, edges, close_last)
    return errors_from_statistics(bin_statistics(pred, target, edges, close_last), counts, many, few)
