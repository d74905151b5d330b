"""Equalization Loss v2 (sigmoid, gradient-driven), Tan et al. CVPR 2021."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative, check_reduction
from ..kernels import sigmoid_family as _sig
from ..kernels._halfio import float32_compute_unless_kernel
from ..registry import register_loss
from ._grad_stats import GradStatsLoss, check_logits_target, check_stats, drop_ignored, restore_rows

__all__ = ["eqlv2_loss", "eqlv2_weights", "eqlv2_grad_stats", "EQLv2Loss"]

_RATIO_EPS = 1e-10  # official: pos_neg = pos_grad / (neg_grad + 1e-10)


def eqlv2_weights(pos_grad: Optional[Tensor], neg_grad: Optional[Tensor], gamma: float = 12.0,
                  mu: float = 0.8, alpha: float = 4.0, *, num_classes: Optional[int] = None,
                  dtype=None, device=None) -> Tuple[Tensor, Tensor]:
    r"""Per-class positive and negative weights of EQLv2.

    With :math:`g_j = G^{pos}_j / (G^{neg}_j + 10^{-10})` and
    :math:`f(g) = 1 / (1 + e^{-\gamma (g - \mu)})`: negative weight :math:`q_j = f(g_j)`,
    positive weight :math:`r_j = 1 + \alpha (1 - q_j)`. Fresh statistics (``None``) give
    weights 1 (the official code's first iteration); ``num_classes`` is then required.
    """
    if pos_grad is None:
        if num_classes is None:
            raise ValueError("num_classes is needed when pos_grad/neg_grad are None")
        # two tensors, not one twice: autograd.Function inputs must be distinct under torch.compile
        return (torch.ones(num_classes, dtype=dtype, device=device),
                torch.ones(num_classes, dtype=dtype, device=device))
    ratio = pos_grad / (neg_grad + _RATIO_EPS)
    neg_w = torch.sigmoid(gamma * (ratio - mu))  # == 1 / (1 + exp(-gamma (g - mu))), overflow-safe
    pos_w = 1.0 + alpha * (1.0 - neg_w)
    if dtype is not None:
        pos_w, neg_w = pos_w.to(dtype), neg_w.to(dtype)
    return pos_w, neg_w


def _full_weights(pos_w: Tensor, neg_w: Tensor, use_background_column: bool) -> Tuple[Tensor, Tensor]:
    if not use_background_column:
        return pos_w, neg_w
    one = pos_w.new_ones(1)  # official: the background column's weights are always 1
    return torch.cat([pos_w, one]), torch.cat([neg_w, one])


def _cdt(input: Tensor) -> torch.dtype:
    # 16-bit logits reach the loss body only on the Triton path; the weights stay float32
    return torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype


def _check_hparams(gamma, mu, alpha):
    check_nonnegative(gamma, "gamma")
    check_nonnegative(alpha, "alpha")
    if not isinstance(mu, (int, float)) or isinstance(mu, bool):
        raise TypeError(f"mu must be a real number, got {type(mu).__name__}")


def _eqlv2(input, target, pos_grad, neg_grad, gamma, mu, alpha, use_background_column, sample_weight,
           reduction, want_stats):
    check_reduction(reduction)
    _check_hparams(gamma, mu, alpha)
    # the kernel checks the label range as it reads the labels where values stay on the device
    in_kernel = _sig.kernel_checks_targets("eqlv2", input, target)
    n, c = check_logits_target(input, target, values=not in_kernel)
    c_stats = c - 1 if use_background_column else c
    if c_stats < 1:
        raise ValueError("input must have at least 2 columns (classes + background) when "
                         f"use_background_column=True, got shape {tuple(input.shape)}")
    check_stats(pos_grad, neg_grad, c_stats)
    pos_w, neg_w = eqlv2_weights(pos_grad, neg_grad, gamma, mu, alpha, num_classes=c_stats,
                                 dtype=_cdt(input), device=input.device)
    pos_w, neg_w = _full_weights(pos_w, neg_w, use_background_column)
    target = target.long()
    if sample_weight is None and reduction != "none" and n > 0:
        scale = 1.0 / n if reduction == "mean" else 1.0
        loss, pos_inc, neg_inc = _sig.run("eqlv2", input, target, pos_w, neg_w, scale, want_stats, c_stats,
                                          validate=in_kernel)
    else:
        per, pos_inc, neg_inc = _sig.run("eqlv2", input, target, pos_w, neg_w, None, want_stats, c_stats,
                                         validate=in_kernel)
        loss = reduce_loss(per, reduction, sample_weight)
    return loss, pos_inc, neg_inc


@float32_compute_unless_kernel("eqlv2")
def eqlv2_loss(input: Tensor, target: Tensor, pos_grad: Optional[Tensor] = None,
               neg_grad: Optional[Tensor] = None, gamma: float = 12.0, mu: float = 0.8,
               alpha: float = 4.0, *, use_background_column: bool = False, ignore_index: Optional[int] = -100,
               sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Equalization Loss v2 (sigmoid), Tan et al., "Equalization Loss v2", CVPR 2021.

    A one-hot binary cross-entropy whose per-class positive/negative terms are re-weighted from
    the accumulated gradient statistics (pure: the statistics are arguments, see
    :class:`EQLv2Loss` for the stateful module):

    .. math::
        g_j = \frac{G^{pos}_j}{G^{neg}_j + 10^{-10}},\quad
        q_j = \frac{1}{1 + e^{-\gamma (g_j - \mu)}},\quad r_j = 1 + \alpha (1 - q_j),

        \ell_i = \sum_j \big[ y_{ij} r_j + (1 - y_{ij}) q_j \big]\,
        \mathrm{BCE}(z_{ij}, y_{ij}),

    ``reduction="mean"`` returns :math:`\frac1N \sum_i \ell_i` (the official
    ``sum(w * bce) / n_i``), ``"sum"`` the total and ``"none"`` the per-sample :math:`\ell_i`.
    ``pos_grad = neg_grad = None`` means fresh statistics: all weights are 1 (plain one-hot BCE
    summed over classes), as in the official code's first iteration. A class with only
    negative gradient so far (:math:`g_j \approx 0`) gets a negative weight
    :math:`\approx \sigma(-\gamma\mu)` (6.8e-5 for the defaults) and a positive weight
    :math:`\approx 1 + \alpha`.

    Defaults (gamma=12, mu=0.8, alpha=4) follow ``mmdet/models/losses/eqlv2.py`` of
    github.com/tztztztztz/eqlv2. With ``use_background_column=True`` the last column is a
    detector's background/objectness logit (label ``C - 1`` = background): its weights are
    always 1 and it has no statistics (``pos_grad``/``neg_grad`` have ``C - 1`` entries), as in
    the official code. The gradient w.r.t. the logits is hand-written (see
    ``tailwise.kernels.sigmoid_family.EQLv2Function``); weights are constants (no gradient through the statistics).

    Args:
        input: logits ``(N, C)``.
        target: class indices ``(N,)``.
        pos_grad, neg_grad: accumulated statistics ``(C,)`` (``(C - 1,)`` with a background
            column), or both ``None``.
        gamma, mu, alpha: mapping-function parameters.
        ignore_index: rows with this label are skipped (as in ``F.cross_entropy``): no loss, no
            gradient, not counted by ``"mean"``; ``"none"`` gives them 0. ``None`` disables it.
        sample_weight: optional per-sample weights ``(N,)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from tailwise.classification.eqlv2 import eqlv2_loss
        >>> z, y = torch.zeros(2, 3), torch.tensor([0, 2])
        >>> round(eqlv2_loss(z, y).item(), 4)   # fresh: 3 * log 2
        2.0794
    """
    input, target, sample_weight, keep = drop_ignored(input, target, sample_weight, ignore_index)
    loss, _, _ = _eqlv2(input, target, pos_grad, neg_grad, gamma, mu, alpha, use_background_column,
                        sample_weight, reduction, False)
    return restore_rows(loss, keep, reduction)


@float32_compute
@torch.no_grad()
def eqlv2_grad_stats(input: Tensor, target: Tensor, pos_grad: Optional[Tensor] = None,
                     neg_grad: Optional[Tensor] = None, gamma: float = 12.0, mu: float = 0.8,
                     alpha: float = 4.0, *, use_background_column: bool = False,
                     ignore_index: Optional[int] = -100) -> Tuple[Tensor, Tensor]:
    r"""This batch's increments of the EQLv2 statistics (pure; no gradient).

    :math:`\Delta G^{pos}_j = \sum_i y_{ij}\, r_j\, |\sigma(z_{ij}) - 1|` and
    :math:`\Delta G^{neg}_j = \sum_i (1 - y_{ij})\, q_j\, \sigma(z_{ij})`: the magnitudes of the
    weighted BCE gradients, with the weights computed from the statistics *before* the update
    (official ``collect_grad``). Returns ``(pos_inc, neg_inc)`` of shape ``(C,)`` (``(C - 1,)``
    with a background column, which gets no statistics).
    """
    input, target, _, _ = drop_ignored(input, target, None, ignore_index)
    n, c = check_logits_target(input, target)
    c_stats = c - 1 if use_background_column else c
    check_stats(pos_grad, neg_grad, c_stats)
    pos_w, neg_w = eqlv2_weights(pos_grad, neg_grad, gamma, mu, alpha, num_classes=c_stats,
                                 dtype=input.dtype, device=input.device)
    pos_w, neg_w = _full_weights(pos_w, neg_w, use_background_column)
    y = F.one_hot(target.long(), c).to(input.dtype)
    p = torch.sigmoid(input)
    pos_inc = ((1.0 - p) * y).sum(0) * pos_w
    neg_inc = (p * (1.0 - y)).sum(0) * neg_w
    return pos_inc[:c_stats], neg_inc[:c_stats]


@register_loss("eqlv2")
class EQLv2Loss(GradStatsLoss):
    r"""Equalization Loss v2 with its gradient statistics as buffers.

    ``num_classes`` is the number of classes with statistics: the logits have ``num_classes``
    columns, or ``num_classes + 1`` with ``use_background_column=True`` (label ``num_classes`` =
    background). Each forward in training mode computes the loss with the current statistics
    (weights 1 before the first update), then adds this batch's weighted gradient magnitudes
    (:func:`eqlv2_grad_stats`), summed over ranks, to ``pos_grad`` / ``neg_grad``. In eval mode
    the statistics are frozen. See :func:`eqlv2_loss` for the formula.

    Example:
        >>> import torch
        >>> from tailwise.classification.eqlv2 import EQLv2Loss
        >>> crit = EQLv2Loss(num_classes=5)
        >>> z = torch.randn(8, 5, requires_grad=True)
        >>> crit(z, torch.randint(0, 5, (8,))).backward()
        >>> int(crit.num_updates)
        1
    """

    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0,
                 use_background_column: bool = False, ignore_index: Optional[int] = -100,
                 reduction: str = "mean") -> None:
        super().__init__(num_classes, reduction, ignore_index)
        _check_hparams(gamma, mu, alpha)
        self.gamma, self.mu, self.alpha = float(gamma), float(mu), float(alpha)
        self.use_background_column = bool(use_background_column)

    def current_weights(self) -> Tuple[Tensor, Tensor]:
        """``(pos_w, neg_w)`` that the next forward uses (ones while fresh)."""
        pos_w, neg_w = eqlv2_weights(self.pos_grad, self.neg_grad, self.gamma, self.mu, self.alpha)
        fresh = self.num_updates == 0  # tensor compare: no host sync
        return torch.where(fresh, torch.ones_like(pos_w), pos_w), torch.where(fresh, torch.ones_like(neg_w), neg_w)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        expected = self.num_classes + (1 if self.use_background_column else 0)
        input, target, sample_weight, keep = drop_ignored(input, target, sample_weight, self.ignore_index)
        in_kernel = _sig.kernel_checks_targets("eqlv2", input, target)
        check_logits_target(input, target, num_columns=expected, values=not in_kernel)
        return restore_rows(_module_forward(self, input, target, sample_weight, in_kernel), keep, self.reduction)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, gamma={self.gamma}, mu={self.mu}, alpha={self.alpha}, "
                f"use_background_column={self.use_background_column}, reduction={self.reduction!r}")


@float32_compute_unless_kernel("eqlv2")
def _fused_with_weights(input, target, pos_w, neg_w, use_bg, sample_weight, reduction, want_stats, validate=False):
    pos_w, neg_w = _full_weights(pos_w.to(_cdt(input)), neg_w.to(_cdt(input)), use_bg)
    c_stats = input.shape[1] - (1 if use_bg else 0)
    target = target.long()
    n = input.shape[0]
    if sample_weight is None and reduction != "none" and n > 0:
        scale = 1.0 / n if reduction == "mean" else 1.0
        return _sig.run("eqlv2", input, target, pos_w, neg_w, scale, want_stats, c_stats, validate=validate)
    per, pos_inc, neg_inc = _sig.run("eqlv2", input, target, pos_w, neg_w, None, want_stats, c_stats,
                                     validate=validate)
    return reduce_loss(per, reduction, sample_weight), pos_inc, neg_inc


def _module_forward(mod: EQLv2Loss, input, target, sample_weight, validate=False):
    pos_w, neg_w = mod.current_weights()
    update = mod.training
    loss, pos_inc, neg_inc = _fused_with_weights(input, target, pos_w, neg_w, mod.use_background_column,
                                                 sample_weight, mod.reduction, update, validate)
    if update:
        mod._accumulate(pos_inc, neg_inc)
    return loss
