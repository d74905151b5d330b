"""Balanced MSE, batch-based Monte-Carlo form (BMC)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_positive
from ..distributed import all_gather_no_grad
from ..registry import register_loss
from ._checks import SigmaLike, as_rows, as_sigma, need_batch

__all__ = ["bmc_loss", "BMCLoss"]


def pairwise_sq_dist(pred: Tensor, samples: Tensor) -> Tensor:
    """``||pred_i - samples_j||^2`` as an (N, M) matrix, exact (no ``a^2 + b^2 - 2ab`` cancellation).

    Labels are low-dimensional (1..a few), so summing D broadcast differences is both exact and as
    fast as the textbook ``(pred - target.T) ** 2``; the expansion is only used for wide targets.
    """
    d = pred.shape[1]
    if d == 1:
        return (pred - samples.T).square()
    if d <= 8:
        out = (pred[:, :1] - samples[:, :1].T).square()
        for k in range(1, d):
            out = out + (pred[:, k:k + 1] - samples[:, k:k + 1].T).square()
        return out
    sq = pred.square().sum(1, keepdim=True) + samples.square().sum(1) - 2.0 * pred @ samples.T
    return sq.clamp_min(0.0)


def batch_mc_cross_entropy(logits: Tensor, offset: int) -> Tensor:
    """Per-row ``-log softmax(logits)[i, offset + i]``: row i's own label is the positive."""
    n = logits.shape[0]
    labels = torch.arange(offset, offset + n, device=logits.device)
    return F.cross_entropy(logits, labels, reduction="none")


def gather_targets(target: Tensor, gather_distributed: bool):
    if gather_distributed:
        return all_gather_no_grad(target, return_offset=True)
    return target, 0


@float32_compute
def bmc_loss(pred: Tensor, target: Tensor, noise_sigma: SigmaLike, *, sample_weight: Optional[Tensor] = None,
             reduction: str = "mean", gather_distributed: bool = True) -> Tensor:
    r"""Balanced MSE with batch-based Monte-Carlo integration (BMC), Ren et al. CVPR 2022.

    Balanced MSE replaces the Gaussian likelihood :math:`p(y | \hat y)` of MSE with the
    *balanced* one :math:`p_{bal}(y|\hat y) = \mathcal N(y; \hat y, \sigma^2 I) /
    \int \mathcal N(y'; \hat y, \sigma^2 I)\, p_{train}(y')\, dy'`. BMC estimates the integral with
    the batch's own targets :math:`y_j` as samples of :math:`p_{train}`:

    .. math::
        \ell_i = 2\sigma^2_{\text{detached}} \cdot \Big( -\log \frac{\exp(-\|\hat y_i - y_i\|^2 / 2\sigma^2)}
        {\sum_j \exp(-\|\hat y_i - y_j\|^2 / 2\sigma^2)} \Big),

    i.e. a cross-entropy over the batch whose logits are isotropic Gaussian log-densities (their
    :math:`-\frac D2 \log 2\pi\sigma^2` constant cancels in the softmax, so 1-D and D-dim targets
    use one formula, as ``bmc_loss_md`` in the official ``synthetic_benchmark/loss.py``). The
    factor :math:`2\sigma^2` is detached, as in the official code, so with a fixed sigma the
    gradient has MSE's scale; ``noise_sigma`` can still be learned through the logits.

    **What the value means.** Without the scale factor it is a softmax cross-entropy: always
    :math:`\ge 0` and :math:`\le \log M` when the prediction is closer to its own label than to
    any other (``M`` = Monte-Carlo samples). It is not an error in label units. As
    :math:`\sigma \to 0` the softmax becomes a hard nearest-label assignment (the loss only asks
    each prediction to be nearer its own label than any other label); as
    :math:`\sigma \to \infty` the gradient tends to :math:`2(\bar y - y_i)`, which no longer
    depends on the prediction, so a too-large sigma removes the fitting signal.

    Under ``torch.distributed`` (and ``gather_distributed=True``) the Monte-Carlo samples are the
    targets of *all* ranks (gathered without gradient; shards may differ in size), so 2 ranks with
    half batches give the same per-sample losses as one process with the full batch. The loss of
    each rank is the mean over its own rows; after DDP averages gradients (equal shards) this is
    the full-batch gradient.

    Args:
        pred: predictions ``(N,)``, ``(N, 1)`` or ``(N, D)``.
        target: labels, same shape, finite.
        noise_sigma: :math:`\sigma > 0`, a float or a scalar tensor (e.g. a learnable
            ``nn.Parameter``, see :class:`BMCLoss`).
        sample_weight: optional per-sample weights ``(N,)``.
        reduction: ``"mean"`` (official), ``"sum"`` or ``"none"`` (per-sample ``(N,)``).
        gather_distributed: use every rank's targets as samples when distributed.

    Raises:
        ValueError: fewer than 2 Monte-Carlo samples, i.e. a batch of 1 over all ranks (use
            :class:`GAILoss` / :class:`BNILoss`); an empty batch gives 0 with a grad_fn.

    Example:
        >>> import torch
        >>> from tailwise.functional import bmc_loss
        >>> pred = torch.tensor([0.0, 1.0], requires_grad=True)
        >>> loss = bmc_loss(pred, torch.tensor([0.0, 1.0]), noise_sigma=1.0)
        >>> round(loss.item(), 4)   # 2 * (log(1 + e^-0.5))
        0.9482
    """
    p, t = as_rows(pred, target)
    var = as_sigma(noise_sigma, "noise_sigma", p).square()
    samples, offset = gather_targets(t, gather_distributed)
    if p.shape[0] == 0:
        # an empty local batch has no per-sample loss: 0 with a grad_fn (to pred and the scale, so
        # DDP sees the parameter used); only a batch of 1 across all ranks lacks Monte-Carlo samples
        return reduce_loss(p.sum(1) * var, reduction, sample_weight)
    need_batch(samples.shape[0], "bmc_loss")
    logits = pairwise_sq_dist(p, samples.to(p.dtype)) * (-0.5 / var)
    loss = batch_mc_cross_entropy(logits, offset) * (2.0 * var).detach()
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("bmc")
class BMCLoss(Loss):
    r"""Balanced MSE, batch Monte-Carlo form (BMC) with a learnable ``noise_sigma``.

    ``noise_sigma`` is an ``nn.Parameter`` initialised to ``init_noise_sigma`` (official default
    in the synthetic benchmark: the true label-noise sigma; IMDB-WIKI-DIR uses 1.0). Add it to the
    optimizer to learn it (the official code gives it its own parameter group, e.g. lr 1e-3 in
    ``main_1d.py`` and ``sigma_lr`` in IMDB-WIKI-DIR); leave it out to keep sigma fixed. See
    :func:`tailwise.functional.bmc_loss` for the formula and what the value means.

    Example:
        >>> import torch, tailwise
        >>> criterion = tailwise.BMCLoss(init_noise_sigma=1.0)
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD([{"params": model.parameters()},
        ...                        {"params": criterion.parameters(), "lr": 1e-3}], lr=1e-2)
        >>> loss = criterion(model(torch.randn(8, 3)), torch.randn(8, 1))
        >>> loss.backward()
    """

    def __init__(self, init_noise_sigma: float = 1.0, reduction: str = "mean",
                 gather_distributed: bool = True) -> None:
        super().__init__(reduction)
        check_positive(init_noise_sigma, "init_noise_sigma")
        self.noise_sigma = nn.Parameter(torch.tensor(float(init_noise_sigma)))
        self.gather_distributed = gather_distributed

    def forward(self, pred: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return bmc_loss(pred, target, self.noise_sigma, sample_weight=sample_weight, reduction=self.reduction,
                        gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"noise_sigma={self.noise_sigma.item():.4g}, reduction={self.reduction!r}"
