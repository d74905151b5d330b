"""Equalized Focal Loss (EFL), Li et al., CVPR 2022."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import (assert_values, check_floating, check_nonnegative, check_positive, check_reduction,
                           host_value_checks)
from ..kernels import sigmoid_family as _sig
from ..kernels._halfio import float32_compute_unless_kernel
from ..kernels.sigmoid_family import efl_terms as _terms
from ..registry import register_loss
from ._grad_stats import GradStatsLoss, check_logits_target, check_stats, drop_ignored, restore_rows

__all__ = ["equalized_focal_loss", "equalized_focal_grad_stats", "EqualizedFocalLoss"]

_RATIO_EPS = 1e-10


def _gammas(pos_grad, neg_grad, gamma_b, scale_factor, c, like):
    if pos_grad is None:
        g = like.new_ones(c)  # official initial pos_neg buffer: ones -> plain focal loss
    else:
        g = (pos_grad / (neg_grad + _RATIO_EPS)).clamp(0.0, 1.0).to(like.dtype)
    gamma = gamma_b + scale_factor * (1.0 - g)
    return gamma, gamma / gamma_b


def _check_hparams(gamma_b, scale_factor, alpha):
    check_positive(gamma_b, "gamma_b")
    check_nonnegative(scale_factor, "scale_factor")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha > 1:
        raise ValueError(f"alpha must be a number <= 1 (negative disables it), got {alpha!r}")


@float32_compute_unless_kernel("equalized_focal")
def equalized_focal_loss(input: Tensor, target: Tensor, pos_grad: Optional[Tensor] = None,
                         neg_grad: Optional[Tensor] = None, gamma_b: float = 2.0,
                         scale_factor: float = 8.0, alpha: float = 0.25, *, ignore_index: Optional[int] = -100,
                         sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Equalized Focal Loss (sigmoid), Li et al., "Equalized Focal Loss for Dense Long-Tailed
    Object Detection", CVPR 2022 (pure: statistics are arguments, see :class:`EqualizedFocalLoss`).

    .. math::
        g_j = \mathrm{clamp}\Big(\frac{G^{pos}_j}{G^{neg}_j + 10^{-10}}, 0, 1\Big),\quad
        \gamma_j = \gamma_b + s (1 - g_j),

        \ell_i = -\sum_j \alpha_t \frac{\gamma_j}{\gamma_b} (1 - p_t)^{\gamma_j} \log p_t,

    with :math:`p_t = \sigma(z_{ij})` for the target class and :math:`1 - \sigma(z_{ij})`
    otherwise, :math:`\alpha_t = \alpha` for positives and :math:`1 - \alpha` for negatives
    (``alpha < 0`` disables it, as in the official code). :math:`\gamma_j` and the weighting
    factor are constants (detached). Fresh statistics (``None``) give :math:`g_j = 1`, i.e. the
    sigmoid focal loss (the official ``pos_neg`` buffer starts at ones).
    ``reduction="mean"`` divides the sum by N (the official normaliser is the number of
    positives, N for one label per sample). Defaults (gamma_b=2, s=8, alpha=0.25) follow
    ``EqualizedFocalLoss`` in ModelTC/United-Perception (and EOD).

    Args:
        input: logits ``(N, C)`` (no background column: a background sample is a row whose
            target is all zeros; pass ``target`` as an ``(N, C)`` 0/1 matrix for that).
        target: class indices ``(N,)`` or a 0/1 float matrix ``(N, C)``.
        pos_grad, neg_grad: statistics ``(C,)`` or both ``None``.
        ignore_index: index targets equal to it are skipped, as in ``F.cross_entropy``
            (``None``: off; not used with matrix targets, whose all-zero rows are background).

    Example:
        >>> import torch
        >>> from tailwise.classification.equalized_focal import equalized_focal_loss
        >>> loss = equalized_focal_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """
    check_reduction(reduction)
    _check_hparams(gamma_b, scale_factor, alpha)
    input, target, sample_weight, keep = drop_ignored(input, target, sample_weight, ignore_index)
    in_kernel = _in_kernel(input, target)
    y, c = _targets(input, target, dense=False, values=not in_kernel)
    check_stats(pos_grad, neg_grad, c)
    gamma, wf = _gammas(pos_grad, neg_grad, float(gamma_b), float(scale_factor), c, _like(input))
    loss = _sig.run("equalized_focal", input, y, gamma, wf, float(alpha), validate=in_kernel)
    return restore_rows(reduce_loss(loss, reduction, sample_weight), keep, reduction)


def _like(input):
    # 16-bit logits reach the loss body only on the Triton path; per-class vectors stay float32
    return input.new_empty(0, dtype=torch.float32) if input.dtype in (torch.float16, torch.bfloat16) else input


def _in_kernel(input, target) -> bool:
    # class indices bound for the kernel where values stay on the device: the kernel checks their
    # range as it reads them (its assert comes before the statistics' one-hot)
    return (isinstance(input, Tensor) and isinstance(target, Tensor) and not target.is_floating_point()
            and _sig.kernel_checks_targets("equalized_focal", input, target))


def _targets(input, target, dense: bool = True, values: bool = True):
    """Validate; return the 0/1 matrix (``dense``) or what the op reads (indices or the matrix).

    ``values=False``: the indices' range is left to the kernel (see ``_in_kernel``)."""
    if isinstance(target, Tensor) and target.is_floating_point():
        from .._validation import check_floating
        check_floating(input, "input")
        if input.dim() != 2:
            raise ValueError(f"input must be 2-D logits of shape (N, C), got shape {tuple(input.shape)}")
        if target.shape != input.shape:
            raise ValueError(f"target must be class indices (N,) or a 0/1 matrix with input's shape "
                             f"{tuple(input.shape)}, got shape {tuple(target.shape)}")
        binary = (target == 0) | (target == 1)
        if not host_value_checks(target):
            assert_values(binary, "target given as a matrix must hold only 0 and 1")
        elif not bool(binary.all()):
            raise ValueError("target given as a matrix must hold only 0 and 1")
        return target.to(_like(input).dtype), input.shape[1]
    n, c = check_logits_target(input, target, values=values)
    if not dense:
        return target.long(), c
    return F.one_hot(target.long(), c).to(input.dtype), c


def _increments(input, y, gamma, wf, alpha):
    loss, coef, mod, log_pt, log_1m = _terms(input, y, gamma, wf, alpha)
    # |d/dz [-coef (1-p_t)^g log p_t]| = coef (1-p_t)^g [(1 - p_t) - g p_t log p_t]
    mag = coef * mod * (log_1m.exp() - gamma * log_pt.exp() * log_pt)
    return (mag * y).sum(0), (mag * (1.0 - y)).sum(0)


@float32_compute
@torch.no_grad()
def equalized_focal_grad_stats(input: Tensor, target: Tensor, pos_grad: Optional[Tensor] = None,
                               neg_grad: Optional[Tensor] = None, gamma_b: float = 2.0,
                               scale_factor: float = 8.0, alpha: float = 0.25, *,
                               ignore_index: Optional[int] = -100) -> Tuple[Tensor, Tensor]:
    r"""This batch's increments ``(pos_inc, neg_inc)`` of the EFL statistics.

    The magnitude of the gradient of the summed EFL w.r.t. each logit, split by positive /
    negative entries and summed over samples. The official code reads the same gradient from a
    backward hook on the logits, scaled by the loss normaliser; here it is computed in closed
    form, in sum units (ratios are unchanged).
    """
    _check_hparams(gamma_b, scale_factor, alpha)
    input, target, _, _ = drop_ignored(input, target, None, ignore_index)
    y, c = _targets(input, target)
    check_stats(pos_grad, neg_grad, c)
    gamma, wf = _gammas(pos_grad, neg_grad, float(gamma_b), float(scale_factor), c, input)
    return _increments(input, y, gamma, wf, float(alpha))


@register_loss("equalized_focal")
class EqualizedFocalLoss(GradStatsLoss):
    r"""Equalized Focal Loss with its gradient statistics as buffers.

    Each forward in training mode computes the loss with the current statistics (plain focal
    loss before the first update), then adds :func:`equalized_focal_grad_stats` of the batch,
    summed over ranks. Eval mode freezes them. See :func:`equalized_focal_loss`.

    Example:
        >>> import torch
        >>> from tailwise.classification.equalized_focal import EqualizedFocalLoss
        >>> crit = EqualizedFocalLoss(num_classes=3)
        >>> loss = crit(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """

    def __init__(self, num_classes: int, gamma_b: float = 2.0, scale_factor: float = 8.0,
                 alpha: float = 0.25, ignore_index: Optional[int] = -100, reduction: str = "mean") -> None:
        super().__init__(num_classes, reduction, ignore_index)
        _check_hparams(gamma_b, scale_factor, alpha)
        self.gamma_b, self.scale_factor, self.alpha = float(gamma_b), float(scale_factor), float(alpha)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        check_floating(input, "input")  # a list: TypeError naming input, not AttributeError
        if input.dim() != 2 or input.shape[1] != self.num_classes:
            raise ValueError(f"input must have shape (N, {self.num_classes}), got {tuple(input.shape)}")
        input, target, sample_weight, keep = drop_ignored(input, target, sample_weight, self.ignore_index)
        return restore_rows(_forward(self, input, target, self.pos_grad.clone(), self.neg_grad.clone(), sample_weight),
                            keep, self.reduction)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, gamma_b={self.gamma_b}, scale_factor={self.scale_factor}, "
                f"alpha={self.alpha}, reduction={self.reduction!r}")


@float32_compute_unless_kernel("equalized_focal")
def _forward(mod, input, target, pos_grad, neg_grad, sample_weight):
    in_kernel = _in_kernel(input, target)
    tgt, c = _targets(input, target, dense=False, values=not in_kernel)
    # the official pos_neg starts at ones: before the first update every class has g = 1
    fresh = mod.num_updates == 0
    g_ratio = (pos_grad / (neg_grad + _RATIO_EPS)).clamp(0.0, 1.0)
    g = torch.where(fresh, torch.ones_like(g_ratio), g_ratio).to(_like(input).dtype)
    gamma = mod.gamma_b + mod.scale_factor * (1.0 - g)
    wf = gamma / mod.gamma_b
    loss = reduce_loss(_sig.run("equalized_focal", input, tgt, gamma, wf, mod.alpha, validate=in_kernel),
                       mod.reduction, sample_weight)
    if mod.training:
        with torch.no_grad():
            # the statistics use the torch ops of the torch path (bit-identical on either backend)
            x = input.detach().float() if input.dtype in (torch.float16, torch.bfloat16) else input.detach()
            y = tgt.to(x.dtype) if tgt.is_floating_point() else F.one_hot(tgt, c).to(x.dtype)
            pos_inc, neg_inc = _increments(x, y, gamma, wf, mod.alpha)
        mod._accumulate(pos_inc, neg_inc)
    return loss
