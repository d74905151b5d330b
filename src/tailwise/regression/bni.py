"""Balanced MSE, bin-based numerical integration (BNI), and the helper that builds its bins."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_finite, check_positive
from ..registry import register_loss
from ._checks import SigmaLike, as_rows, as_sigma, as_stat, check_all_positive

__all__ = ["bni_loss", "BNILoss", "label_bins"]


@torch.no_grad()
def label_bins(labels: Tensor, bins: int = 100, range: Optional[Tuple[float, float]] = None
               ) -> Tuple[Tensor, Tensor]:
    """Equal-width histogram of 1-D training labels: ``(bin_centers, bin_weights)``.

    ``bin_weights`` are the empirical frequencies (counts / N, summing to 1). Empty bins are
    dropped: their weight would be 0 and :math:`\\log 0` contributes nothing to BNI's
    log-sum-exp, so dropping them gives the same loss without ``-inf`` entries. ``range``
    defaults to ``(labels.min(), labels.max())``. Returns float64 tensors.

    Example:
        >>> import torch
        >>> from tailwise import label_bins
        >>> centers, weights = label_bins(torch.tensor([0.0, 0.1, 0.9, 1.0]), bins=2)
        >>> centers.tolist(), weights.tolist()
        ([0.25, 0.75], [0.5, 0.5])
    """
    if not isinstance(labels, Tensor) or not labels.is_floating_point():
        raise TypeError(f"labels must be a floating-point torch.Tensor, got "
                        f"{labels.dtype if isinstance(labels, Tensor) else type(labels).__name__}")
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty (N,) or (N, 1) tensor, got shape {tuple(labels.shape)}")
    check_finite(labels, "labels")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    x = labels.detach().to(torch.float64).cpu()
    lo, hi = (float(x.min()), float(x.max())) if range is None else (float(range[0]), float(range[1]))
    if not hi >= lo:
        raise ValueError(f"range must be (low, high) with low <= high, got ({lo}, {hi})")
    if hi == lo:  # all labels equal: one bin at that value
        return torch.tensor([lo], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    idx = torch.bucketize(x, edges[1:-1], right=True)  # last bin closed on the right, like numpy
    inside = (x >= lo) & (x <= hi)
    counts = torch.bincount(idx[inside], minlength=bins).to(torch.float64)
    centers = 0.5 * (edges[:-1] + edges[1:])
    keep = counts > 0
    return centers[keep], counts[keep] / counts.sum()


@float32_compute
def bni_loss(pred: Tensor, target: Tensor, noise_sigma: SigmaLike, bin_centers: Tensor, bin_weights: Tensor,
             *, sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Balanced MSE with bin-based numerical integration (BNI), Ren et al. CVPR 2022.

    The training-label density is a histogram (bin centres :math:`b_k`, weights :math:`w_k`) and
    the balanced likelihood's normaliser is a sum over bins:

    .. math::
        \ell_i = 2\sigma^2_{\text{detached}} \Big( \frac{\|\hat y_i - y_i\|^2}{2\sigma^2}
        + \log \sum_k w_k \exp\big(-\|\hat y_i - b_k\|^2 / 2\sigma^2\big) \Big).

    This is :math:`-\log \mathcal N(y_i; \hat y_i, \sigma^2 I) + \log \sum_k w_k
    \mathcal N(\hat y_i; b_k, \sigma^2 I)`: both Gaussians' :math:`\frac D2 \log 2\pi\sigma^2`
    constants cancel exactly, which is why the official ``bni_loss``
    (``imdb-wiki-dir/balanaced_mse.py``, ``nyud2-dir/balanaced_mse.py``) has no
    :math:`\log\sigma` term, unlike GAI. Bin weights are used as given (empirical frequencies in
    the official code and in :func:`label_bins`).

    **What the value means / why it goes negative.** With weights summing to 1 the balancing
    term is :math:`\log` of a weighted average of numbers in (0, 1], so it is :math:`\le 0`; the
    loss is the squared error *minus* :math:`2\sigma^2` times how far the prediction sits inside
    the dense part of the training labels. A good prediction in a dense label region therefore
    has a negative loss (at best :math:`2\sigma^2 \log \max_k w_k`); only its changes matter.

    Args:
        pred, target: ``(N,)``, ``(N, 1)`` or ``(N, D)``, same shape; target finite.
        noise_sigma: :math:`\sigma > 0` (float or scalar tensor; learnable in :class:`BNILoss`).
        bin_centers: ``(B,)`` (1-D) or ``(B, D)`` bin centres.
        bin_weights: ``(B,)`` strictly positive bin weights.
        sample_weight: optional per-sample weights ``(N,)``.
        reduction: ``"mean"`` (official), ``"sum"`` or ``"none"`` (per-sample ``(N,)``).

    Example:
        >>> import torch
        >>> from tailwise.functional import bni_loss
        >>> centers, w = torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5])
        >>> loss = bni_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0, centers, w)
        >>> round(loss.item(), 4)   # 2 * log(0.5 * (1 + e^-0.5))
        -0.4381
    """
    p, t = as_rows(pred, target)
    d = p.shape[1]
    var = as_sigma(noise_sigma, "noise_sigma", p).square()
    centers = as_stat(bin_centers, "bin_centers", p)
    weights = as_stat(bin_weights, "bin_weights", p)
    _check_bins(centers, weights, d)
    if centers.dim() == 1:
        centers = centers[:, None]
    if d == 1:
        diff2 = (p - centers.T).square()
    else:
        diff2 = (p[:, None, :] - centers[None]).square().sum(2)
    balancing = torch.logsumexp(torch.log(weights) - diff2 / (2 * var), 1)
    loss = ((p - t).square().sum(1) / (2 * var) + balancing) * (2 * var).detach()
    return reduce_loss(loss, reduction, sample_weight)


def _check_bins(centers: Tensor, weights: Tensor, d: int) -> None:
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError(f"bin_weights must be a non-empty (B,) tensor, got shape {tuple(weights.shape)}")
    b = weights.shape[0]
    ok = centers.shape == (b, d) or (d == 1 and centers.shape == (b,))
    if not ok:
        raise ValueError(f"bin_centers must be ({b},) or ({b}, {d}) to match bin_weights ({b},) and "
                         f"targets with D={d}, got shape {tuple(centers.shape)}")
    check_all_positive(weights, "bin_weights")


@register_loss("bni")
class BNILoss(Loss):
    r"""Balanced MSE with bin-based numerical integration (BNI) and a learnable ``noise_sigma``.

    ``bin_centers`` / ``bin_weights`` are buffers (in ``state_dict()``); ``noise_sigma`` is an
    ``nn.Parameter``. :meth:`from_labels` builds the bins with :func:`tailwise.label_bins`. See
    :func:`tailwise.functional.bni_loss` for the formula and why the value goes negative.

    Example:
        >>> import torch, tailwise
        >>> labels = torch.randn(1000).exp()
        >>> criterion = tailwise.BNILoss.from_labels(labels, bins=50)
        >>> loss = criterion(torch.randn(16), labels[:16])
    """

    def __init__(self, bin_centers, bin_weights, init_noise_sigma: float = 1.0,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        check_positive(init_noise_sigma, "init_noise_sigma")
        ref = torch.empty(0)
        centers = as_stat(bin_centers, "bin_centers", ref)
        weights = as_stat(bin_weights, "bin_weights", ref)
        _check_bins(centers, weights, 1 if centers.dim() == 1 else centers.shape[-1])
        self.register_buffer("bin_centers", centers)
        self.register_buffer("bin_weights", weights)
        self.noise_sigma = nn.Parameter(torch.tensor(float(init_noise_sigma)))

    @classmethod
    def from_labels(cls, labels: Tensor, bins: int = 100, *, range: Optional[Tuple[float, float]] = None,
                    init_noise_sigma: float = 1.0, reduction: str = "mean") -> "BNILoss":
        """Histogram 1-D ``labels`` into ``bins`` equal-width bins (empty bins dropped) and build the loss."""
        centers, weights = label_bins(labels, bins, range)
        return cls(centers, weights, init_noise_sigma=init_noise_sigma, reduction=reduction)

    def forward(self, pred: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return bni_loss(pred, target, self.noise_sigma, self.bin_centers, self.bin_weights,
                        sample_weight=sample_weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"bins={self.bin_weights.numel()}, noise_sigma={self.noise_sigma.item():.4g}, "
                f"reduction={self.reduction!r}")
