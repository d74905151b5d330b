r"""Op ``softmax_ce``: the softmax cross-entropy family in one row-wise op.

For logits ``x`` of shape ``(N, C)`` or ``(N, C, d1, ...)`` and class indices ``y``, each
position (row) gets :math:`z_c = s_c x_c + o_c` (a per-class ``scale``, the IIF weights, and a
per-class additive ``offset``: ``tau * log prior`` of logit adjustment / Balanced Softmax, or the
Softmax-EQL term), :math:`l = \log \mathrm{softmax}(z)_y` and the loss

* ``gamma == 0``: :math:`(1-\epsilon) w_y (-l) + \frac{\epsilon}{C} \sum_c w_c (-\log
  \mathrm{softmax}(z)_c)`, exactly ``F.cross_entropy(z, y, weight=w, label_smoothing=eps,
  reduction="none")`` (``w`` = ``class_weight``, 1 when absent);
* ``gamma > 0``: the softmax focal loss :math:`-w_y (1 - e^{l})^{\gamma} l` (``w`` is the focal
  ``alpha``); label smoothing is not defined for it.

Positions whose target is ``ignore_index`` get loss 0 and gradient 0. The op returns the
unreduced loss (shape of ``y``); the losses reduce it themselves.

Gradient: :math:`\partial/\partial z_j = k (p_j - [j = y]) + \frac{\epsilon}{C} (W p_j - w_j)`,
``W = sum(w)``, with the row coefficient :math:`k = (1-\epsilon) w_y` for cross-entropy and
:math:`k = -w_y f'(l)`, :math:`f'(l) = \gamma p_y (1-p_y)^{\gamma} l / (1 - p_y) - (1-p_y)^{\gamma}`
for focal (:math:`l / (1 - p_y) \to -1` as :math:`p_y \to 1`, which keeps ``gamma < 1`` finite),
times :math:`s_j` for the scale.

Implementations:

* ``torch`` (:func:`softmax_ce_torch`, the reference and the CPU path): exactly the calls the
  losses made before the kernels layer existed (``F.cross_entropy``; the hand-written
  :class:`SoftmaxFocalFunction` for focal), so CPU results did not change.
* ``triton`` (``_softmax_ce_triton``): one online-softmax sweep per row block in the forward
  (loss, log-sum-exp, ``k``), one sweep in the backward writing the gradient; 16-bit logits are
  read directly and accumulated in float32. :func:`inplace_gradients` selects the Liger-style
  mode that writes the gradient into the logits buffer during the forward (no extra memory; the
  logits are destroyed).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._validation import check_class_indices, host_value_checks
from ._dispatch import dispatch, register_op, select

__all__ = ["SoftmaxFocalFunction", "softmax_ce_torch", "softmax_cross_entropy", "inplace_gradients",
           "inplace_gradients_enabled"]

_STATE = {"inplace": False}


class SoftmaxFocalFunction(torch.autograd.Function):
    """Per-element ``-alpha_y (1 - p_y)^gamma log p_y`` with ``p = softmax(z, dim=1)``.

    Forward: one ``log_softmax`` pass over ``(N, C, ...)`` (saved for backward, as
    ``F.cross_entropy`` does) and O(N) work on the target column. Backward, with
    ``f(l) = -(1 - e^l)^gamma l`` and ``l = log p_y``:
    ``dL/dz_j = go * alpha_y * f'(l) * (delta_{jy} - p_j)``. One ``exp`` pass and one in-place
    scale over ``(N, C, ...)``. ``valid`` (optional) zeroes the loss and gradient of ignored
    positions.
    """

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, alpha_y: Optional[Tensor], valid: Optional[Tensor], gamma: float):
        logp = F.log_softmax(z, dim=1)
        lp = logp.gather(1, y.unsqueeze(1)).squeeze(1)
        q = -torch.expm1(lp)  # 1 - p_y without cancellation
        qg = q.pow(gamma) if gamma != 0 else torch.ones_like(q)
        loss = -qg * lp
        if alpha_y is not None:
            loss = loss * alpha_y
        if valid is not None:
            loss = torch.where(valid, loss, torch.zeros_like(loss))
        ctx.gamma = gamma
        ctx.save_for_backward(logp, y, lp, q, qg, alpha_y, valid)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, go: Tensor):
        logp, y, lp, q, qg, alpha_y, valid = ctx.saved_tensors
        gamma = ctx.gamma
        if gamma != 0:
            # clamp: at logit gaps beyond float range lp = -inf and (1 - q) = p_y = 0, whose product
            # p_y log p_y -> 0 must not become 0 * -inf = NaN
            lp = lp.clamp_min(torch.finfo(lp.dtype).min)
            ratio = torch.where(q > 0, lp / torch.where(q > 0, q, torch.ones_like(q)), -torch.ones_like(q))
            dloss_dlp = gamma * (1 - q) * qg * ratio - qg
        else:
            dloss_dlp = -qg
        coef = go * dloss_dlp
        if alpha_y is not None:
            coef = coef * alpha_y
        if valid is not None:
            coef = torch.where(valid, coef, torch.zeros_like(coef))
        coef = coef.unsqueeze(1)
        grad = logp.exp().mul_(-coef)  # -coef * p_j for every class
        grad.scatter_add_(1, y.unsqueeze(1), coef)  # + coef at the target
        return grad, None, None, None, None


def _class_view(vec: Tensor, like: Tensor) -> Tensor:
    return vec.view((1, -1) + (1,) * (like.dim() - 2))


def softmax_ce_torch(input: Tensor, target: Tensor, offset: Optional[Tensor] = None, scale: Optional[Tensor] = None,
                     class_weight: Optional[Tensor] = None, gamma: float = 0.0, label_smoothing: float = 0.0,
                     ignore_index: int = -100, focal: bool = False, inplace: bool = False,
                     validate: bool = False, want_den: bool = False):
    """Reference implementation of ``softmax_ce`` (see the module docstring).

    ``focal=True`` computes ``gamma == 0`` with the focal function too (what ``focal_loss`` always
    did; equal to cross-entropy up to rounding); ``inplace`` is ignored here. ``validate`` runs
    the target range check (:func:`~tailwise._validation.check_class_indices`) that the caller
    left to the op. ``want_den``: return ``(loss, row_class_weights(...))``.
    """
    if validate:
        check_class_indices(target, input.shape[1], "target", ignore_index=ignore_index)
    if want_den:
        loss = softmax_ce_torch(input, target, offset, scale, class_weight, gamma, label_smoothing, ignore_index,
                                focal)
        return loss, row_class_weights(class_weight, target, ignore_index, input.shape[1])
    # 16-bit logits arrive only when a kernel was chosen and then fell back: compute in float32
    z = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
    if scale is not None:
        z = z * _class_view(scale.to(z.dtype), z)
    if offset is not None:
        z = z + _class_view(offset.to(z.dtype), z)
    if gamma == 0 and not focal:
        cw = None if class_weight is None else class_weight.to(z.dtype)
        return F.cross_entropy(z, target, weight=cw, ignore_index=ignore_index, label_smoothing=label_smoothing,
                               reduction="none")
    if label_smoothing > 0:
        raise ValueError("label_smoothing is not defined for the focal form (gamma > 0)")
    valid = target != ignore_index
    y = torch.where(valid, target, torch.zeros_like(target))
    alpha_y = class_weight.to(z.dtype)[y] if class_weight is not None else None
    return SoftmaxFocalFunction.apply(z, y, alpha_y, valid, float(gamma))


def inplace_gradients_enabled() -> bool:
    """Whether :func:`inplace_gradients` is in force."""
    return _STATE["inplace"]


@contextlib.contextmanager
def inplace_gradients(enabled: bool = True) -> Iterator[None]:
    """Within the block, the Triton path of ``softmax_ce`` writes the gradient into the logits.

    Liger-Kernel's memory trick for the memory-bound case: the forward computes the gradient and
    stores it in the logits' own buffer, so no ``(N, C)`` gradient is allocated. The logits'
    values are destroyed by the forward (do not read them after the loss, e.g. for accuracy),
    and they must not be needed by any other backward. The torch path (CPU) ignores it.

    Example:
        >>> import torch, tailwise
        >>> with tailwise.kernels.inplace_gradients():
        ...     loss = tailwise.functional.cross_entropy_loss(torch.randn(4, 3, requires_grad=True),
        ...                                                   torch.tensor([0, 1, 2, 0]))
    """
    old = _STATE["inplace"]
    _STATE["inplace"] = bool(enabled)
    try:
        yield
    finally:
        _STATE["inplace"] = old


def row_class_weights(class_weight: Tensor, target: Tensor, ignore_index: int, num_classes: int) -> Tensor:
    """``class_weight[y]`` per position, 0 where ``y == ignore_index``: the terms of the weighted
    mean's denominator (what ``F.cross_entropy`` divides by)."""
    valid = target != ignore_index
    return class_weight[target.clamp_min(0).clamp_max(num_classes - 1)] * valid


def softmax_cross_entropy(input: Tensor, target: Tensor, offset: Optional[Tensor] = None,
                          scale: Optional[Tensor] = None, class_weight: Optional[Tensor] = None, gamma: float = 0.0,
                          label_smoothing: float = 0.0, ignore_index: int = -100, focal: bool = False,
                          validate: bool = False, want_den: bool = False):
    """Run op ``softmax_ce`` with the selected backend; returns the unreduced loss (``target.shape``).

    float64 logits always take the torch path (the kernels accumulate in float32). ``validate``
    makes the op check the target range (the caller checked only its metadata): the Triton
    kernel does it while it reads the targets (one device-side assert instead of the ~9 ops of
    a separate check), the torch path with :func:`~tailwise._validation.check_class_indices`.
    ``want_den`` (needs ``class_weight``) returns ``(loss, row_class_weights(...))``; the kernel
    writes the row weights as it reads them (no gather).
    """
    if input.dtype == torch.float64:
        return softmax_ce_torch(input, target, offset, scale, class_weight, gamma, label_smoothing, ignore_index,
                                focal, validate=validate, want_den=want_den)
    extra = {}
    if validate:
        extra["validate"] = True
    if want_den:
        extra["want_den"] = True
    return dispatch("softmax_ce", input, target, offset, scale, class_weight, gamma, label_smoothing,
                    ignore_index, focal, inplace=_STATE["inplace"], **extra)


def kernel_checks_targets(input: Tensor, target: Tensor) -> bool:
    """True when :func:`softmax_cross_entropy` should be given ``validate=True`` instead of a
    separate target range check: its Triton kernel runs and values may not be read on the host."""
    return not host_value_checks(input, target) and uses_kernel(input)


def uses_kernel(input: Tensor) -> bool:
    """True when :func:`softmax_cross_entropy` would run the Triton kernel on ``input``."""
    return input.dtype != torch.float64 and select("softmax_ce", input) == "triton"


register_op("softmax_ce", torch=softmax_ce_torch,
            triton="tailwise.kernels._softmax_ce_triton:softmax_ce_triton",
            losses=("cross_entropy", "focal", "balanced_softmax", "logit_adjusted", "class_balanced", "iif",
                    "difficulty", "softmax_eql", "linear_cross_entropy"))
