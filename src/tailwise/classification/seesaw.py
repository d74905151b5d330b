"""Seesaw loss (Wang et al., CVPR 2021): mitigation and compensation factors on the negative logits."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_floating, check_nonnegative, check_positive, check_tensor
from ..distributed import all_reduce_sum
from ..registry import register_loss
from ._common import check_index_target, check_logits

__all__ = ["seesaw_loss", "seesaw_detection_loss", "SeesawLoss"]


def _seesaw_logits(input: Tensor, target: Tensor, cum_samples: Tensor, p: float, q: float, eps: float) -> Tensor:
    """``z_j + log(M_yj C_yj)`` for ``j != y`` (the target logit is unchanged)."""
    num_classes = input.shape[1]
    onehot = F.one_hot(target, num_classes).to(input.dtype)
    log_w = torch.zeros_like(input)
    if p > 0:
        n = cum_samples.to(dtype=input.dtype, device=input.device).clamp_min(1)
        # M_ij = (N_j / N_i)^p where N_j < N_i, else 1; in log space: p * min(log N_j - log N_i, 0)
        log_ratio = n.log().unsqueeze(0) - n.log()[target].unsqueeze(1)
        log_w = log_w + p * log_ratio.clamp_max(0)
    if q > 0:
        # compensation from the detached scores: C_ij = (s_j / s_i)^q where s_j > s_i
        logp = F.log_softmax(input.detach(), dim=1)
        # log(eps) as a Python number: a CPU tensor bound is an error on CUDA, and a device one a copy
        log_self = logp.gather(1, target.unsqueeze(1)).clamp_min(math.log(eps))
        log_w = log_w + q * (logp - log_self).clamp_min(0)
    return input + log_w * (1 - onehot)


@float32_compute
def seesaw_loss(input: Tensor, target: Tensor, cum_samples: Tensor, *, p: float = 0.8, q: float = 2.0,
                eps: float = 1e-2, reduction: str = "mean", sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Seesaw cross-entropy for classification, given cumulative class counts.

    For a sample of class :math:`i`, each negative logit is shifted,
    :math:`\tilde z_j = z_j + \log(\mathcal{M}_{ij}\,\mathcal{C}_{ij})`, then
    :math:`\ell = \mathrm{CE}(\tilde z, i)`:

    * mitigation :math:`\mathcal{M}_{ij} = (N_j / N_i)^p` if :math:`N_j < N_i` else 1, with
      :math:`N` the cumulative training counts (clamped to >= 1);
    * compensation :math:`\mathcal{C}_{ij} = (\sigma_j / \sigma_i)^q` if :math:`\sigma_j > \sigma_i`
      else 1, with :math:`\sigma = \mathrm{softmax}(z)` detached and :math:`\sigma_i` clamped to
      >= ``eps``.

    Wang et al., "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021 (arXiv
    2008.10032); formula and defaults (``p=0.8``, ``q=2``, ``eps=1e-2``) from mmdetection's
    ``seesaw_ce_loss``. The factors are applied in log space (the same values, without the
    ``pow``/``log`` round trip). :class:`SeesawLoss` keeps ``cum_samples`` as state; this
    function is pure.

    Args:
        input: logits ``(N, C)``.
        target: class indices ``(N,)``.
        cum_samples: cumulative per-class counts ``(C,)`` (float or int).
        p, q, eps: mitigation exponent, compensation exponent, score floor.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        sample_weight: optional per-sample weights ``(N,)`` (mmdet's ``label_weights``).

    Example:
        >>> import torch, tailwise
        >>> z = torch.zeros(1, 3); y = torch.tensor([0])
        >>> round(float(tailwise.functional.seesaw_loss(z, y, torch.tensor([100., 10., 1.]))), 4)
        0.1686
    """
    check_logits(input, exact_2d=True)
    check_index_target(input, target)
    check_tensor(cum_samples, "cum_samples", ndim=1)
    if cum_samples.numel() != input.shape[1]:
        raise ValueError(f"cum_samples must have one entry per class ({input.shape[1]}), got shape "
                         f"{tuple(cum_samples.shape)}")
    p = check_nonnegative(p, "p")
    q = check_nonnegative(q, "q")
    eps = check_positive(eps, "eps")
    loss = F.cross_entropy(_seesaw_logits(input, target, cum_samples, p, q, eps), target, reduction="none")
    return reduce_loss(loss, reduction, sample_weight)


@float32_compute
def seesaw_detection_loss(input: Tensor, target: Tensor, cum_samples: Tensor, *, p: float = 0.8, q: float = 2.0,
                          eps: float = 1e-2, sample_weight: Optional[Tensor] = None,
                          avg_factor: Optional[float] = None) -> Tensor:
    r"""Seesaw loss in mmdetection's detector form: ``C + 2`` outputs per RoI.

    ``input[:, :C]`` are class logits and ``input[:, C:]`` the objectness pair (foreground,
    background); ``target`` is in ``[0, C]`` with ``C`` meaning background. The loss is the sum
    of a seesaw CE over the class logits of the foreground RoIs and a plain CE of the
    objectness pair over all RoIs (label 0 = foreground, 1 = background). Both terms are summed
    and divided by ``avg_factor``, by default the number of RoIs with a positive
    ``sample_weight`` (at least 1), as mmdetection's box head passes it.

    ``cum_samples`` has ``C + 1`` entries (the background count is kept but not used), like
    mmdet's buffer. Returns a scalar.

    Example:
        >>> import torch, tailwise
        >>> z = torch.zeros(4, 3 + 2); y = torch.tensor([0, 1, 2, 3])
        >>> loss = tailwise.functional.seesaw_detection_loss(z, y, torch.tensor([5., 3., 1., 9.]))
    """
    check_logits(input, exact_2d=True)
    num_classes = input.shape[1] - 2
    if num_classes < 1:
        raise ValueError(f"input must have C + 2 >= 3 columns (class logits, then fg/bg objectness), "
                         f"got shape {tuple(input.shape)}")
    check_tensor(target, "target", ndim=1)
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer labels in [0, {num_classes}], got dtype {target.dtype}")
    if target.shape[0] != input.shape[0]:
        raise ValueError(f"target must have shape ({input.shape[0]},), got {tuple(target.shape)}")
    from .._validation import check_class_indices
    check_class_indices(target, num_classes + 1, "target")
    check_tensor(cum_samples, "cum_samples", ndim=1)
    if cum_samples.numel() != num_classes + 1:
        raise ValueError(f"cum_samples must have C + 1 = {num_classes + 1} entries, got shape {tuple(cum_samples.shape)}")
    p, q, eps = check_nonnegative(p, "p"), check_nonnegative(q, "q"), check_positive(eps, "eps")
    w = torch.ones(input.shape[0], dtype=input.dtype, device=input.device) if sample_weight is None else \
        check_floating(sample_weight, "sample_weight", ndim=1).to(input.dtype)
    if w.shape[0] != input.shape[0]:
        raise ValueError(f"sample_weight must have shape ({input.shape[0]},), got {tuple(w.shape)}")
    fg = target < num_classes
    cls_logits, obj_logits = input[:, :num_classes], input[:, num_classes:]
    # background rows are masked out (weight 0) instead of selected, so shapes stay static
    cls_target = torch.where(fg, target, torch.zeros_like(target))
    cls_loss = F.cross_entropy(_seesaw_logits(cls_logits, cls_target, cum_samples[:num_classes], p, q, eps),
                               cls_target, reduction="none")
    obj_loss = F.cross_entropy(obj_logits, (~fg).long(), reduction="none")
    total = (cls_loss * w * fg.to(w.dtype)).sum() + (obj_loss * w).sum()
    if avg_factor is None:
        denom = (w > 0).sum().to(total.dtype).clamp_min(1)
    else:
        denom = torch.as_tensor(check_positive(avg_factor, "avg_factor"), dtype=total.dtype)
    return total / denom


@register_loss("seesaw")
class SeesawLoss(Loss):
    """Seesaw loss with cumulative class counts as state; see :func:`tailwise.functional.seesaw_loss`.

    ``cum_samples`` is a buffer (so it is in ``state_dict``). In training mode each forward
    first adds the batch's labels to it, all-reduced across ranks when ``torch.distributed``
    is initialised (mmdetection accumulates per process; the sum over ranks makes 2 ranks equal
    one process on the full batch), then computes the loss, as mmdetection does (the batch is
    counted before its loss). ``detector=True`` selects mmdetection's form with ``C + 2``
    outputs (:func:`tailwise.functional.seesaw_detection_loss`).

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.SeesawLoss(num_classes=3)
        >>> loss = crit(torch.randn(8, 3), torch.randint(0, 3, (8,)))
        >>> int(crit.cum_samples.sum())
        8
    """

    def __init__(self, num_classes: int, p: float = 0.8, q: float = 2.0, eps: float = 1e-2, detector: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.p, self.q = check_nonnegative(p, "p"), check_nonnegative(q, "q")
        self.eps = check_positive(eps, "eps")
        self.detector = bool(detector)
        if self.detector and reduction != "mean":
            raise ValueError("reduction must be 'mean' with detector=True (the loss is divided by avg_factor)")
        self.register_buffer("cum_samples", torch.zeros(num_classes + (1 if detector else 0), dtype=torch.float64))

    @torch.no_grad()
    def _accumulate(self, target: Tensor) -> None:
        batch = torch.zeros_like(self.cum_samples).index_add_(
            0, target.to(self.cum_samples.device), torch.ones_like(target, dtype=self.cum_samples.dtype,
                                                                    device=self.cum_samples.device))
        self.cum_samples.add_(all_reduce_sum(batch))

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None) -> Tensor:
        width = self.num_classes + (2 if self.detector else 0)
        check_logits(input, exact_2d=True)
        if input.shape[1] != width:
            raise ValueError(f"input must have {width} columns ({'C + 2' if self.detector else 'C'}), "
                             f"got shape {tuple(input.shape)}")
        if self.detector:
            from .._validation import check_class_indices
            check_tensor(target, "target", ndim=1)
            check_class_indices(target, self.num_classes + 1, "target")
        else:
            check_index_target(input, target)
        if self.cum_samples.device != input.device:
            self.cum_samples = self.cum_samples.to(input.device)
        if self.training:
            self._accumulate(target)
        if self.detector:
            return seesaw_detection_loss(input, target, self.cum_samples, p=self.p, q=self.q, eps=self.eps,
                                         sample_weight=sample_weight, avg_factor=avg_factor)
        return seesaw_loss(input, target, self.cum_samples, p=self.p, q=self.q, eps=self.eps,
                           reduction=self.reduction, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, p={self.p}, q={self.q}, detector={self.detector}, " + super().extra_repr()
