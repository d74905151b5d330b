"""Inverse Image Frequency (IIF) logit weighting (Alexandridis et al., github kostas1515/iif)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import upcast
from .._validation import (assert_values, check_choice, check_class_counts, check_nonnegative, check_probability,
                           host_value_checks)
from ..kernels._halfio import float32_compute_unless_kernel
from ..kernels.softmax_ce import uses_kernel
from ..registry import register_loss
from ._common import Like, check_logits, class_view, from_counts, is_soft_target
from .cross_entropy import cross_entropy_loss, index_cross_entropy

__all__ = ["IIF_VARIANTS", "iif_weights", "iif_loss", "IIFLoss"]

IIF_VARIANTS = ("raw", "smooth", "rel", "normit", "gombit", "base2", "base10")


def iif_weights(class_counts, variant: str = "raw", norm: float = 0.0) -> Tensor:
    r"""Per-class IIF weights (float64 ``(C,)``), ``N = sum(n)``, ``f_c = n_c / N``:

    ==========  =======================================
    ``raw``     :math:`\log(N / n_c)` (default)
    ``smooth``  :math:`\log((N + 1) / (n_c + 1)) + 1`
    ``rel``     :math:`\log((N - n_c) / n_c)`
    ``normit``  :math:`-\Phi^{-1}(f_c)` (probit)
    ``gombit``  :math:`-\log(-\log(1 - f_c))`
    ``base2``   :math:`\log_2(N / n_c)`
    ``base10``  :math:`\log_{10}(N / n_c)`
    ==========  =======================================

    As in ``IIFLoss`` of kostas1515/iif (``classification/custom.py``); ``norm > 0`` divides by
    the ``L_norm`` norm of the vector (the official ``iif_norm``; 0 = no normalisation).
    Beware: ``rel``, ``normit`` and ``gombit`` are negative for classes holding more than half
    of the data (``rel``/``normit``) or more than ``1 - 1/e`` of it (``gombit``), and ``raw`` is
    0 for a class holding all of it; a weight <= 0 flips or erases that class's logit.

    Example:
        >>> import tailwise
        >>> tailwise.iif_weights([3, 1]).round(decimals=4)
        tensor([0.2877, 1.3863], dtype=torch.float64)
    """
    check_choice(variant, "variant", IIF_VARIANTS)
    norm = check_nonnegative(norm, "norm")
    n = check_class_counts(class_counts)
    total = n.sum()
    f = n / total
    if variant == "raw":
        w = torch.log(total / n)
    elif variant == "smooth":
        w = torch.log((total + 1) / (n + 1)) + 1
    elif variant == "rel":
        w = torch.log((total - n) / n)
    elif variant == "normit":
        w = -torch.special.ndtri(f)
    elif variant == "gombit":
        w = -torch.log(-torch.log1p(-f))
    elif variant == "base2":
        w = torch.log2(total / n)
    else:
        w = torch.log10(total / n)
    if not host_value_checks(w):
        assert_values(torch.isfinite(w), f"iif_weights variant {variant!r} is not finite for class_counts with a "
                                         f"class holding all samples; use variant='smooth'")
    elif not bool(torch.isfinite(w).all()):
        raise ValueError(f"iif_weights variant {variant!r} is not finite for class_counts with a class holding "
                         f"all samples; use variant='smooth'")
    if norm > 0:
        w = w / torch.linalg.vector_norm(w, ord=norm)
    return w


@float32_compute_unless_kernel("softmax_ce")
def iif_loss(input: Tensor, target: Tensor, class_counts, *, variant: str = "raw", norm: float = 0.0,
             ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
             sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""IIF loss: cross-entropy on logits multiplied by the IIF weights, :math:`\mathrm{CE}(z \odot w, y)`.

    Use the same weights at test time (``IIFLoss.inference_logits``):
    the official evaluation scores ``output * iif[variant]``. Defaults follow kostas1515/iif
    (``variant="raw"``, no normalisation).

    Example:
        >>> import torch, tailwise
        >>> z = torch.randn(8, 3); y = torch.randint(0, 3, (8,))
        >>> loss = tailwise.functional.iif_loss(z, y, [500, 50, 5], variant="smooth")
    """
    check_logits(input)
    check_choice(variant, "variant", IIF_VARIANTS)
    norm = check_nonnegative(norm, "norm")
    # weights in the compute dtype (float32 for 16-bit logits bound for the kernel)
    wdt = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    w = from_counts(class_counts, input.shape[1], Like(input.device, wdt), ("iif", variant, norm),
                    lambda n: iif_weights(n, variant, norm))
    return _weighted_logits_ce(input, target, w, ignore_index, label_smoothing, reduction, sample_weight)


class _ScaleLogits(torch.autograd.Function):
    """``z * w`` kept inside the float range: finite logits near 1e38 times ``w > 1`` overflow to
    +-inf and the softmax then computes inf - inf = NaN. The product is clamped to +-max (a huge
    finite gap: the loss may be +inf, never NaN) and ``+ 0 * z`` keeps a NaN/+-inf logit
    non-finite. Backward is ``g * w`` (the product's derivative), as plain autograd's mul; the
    clamp only guards the forward values, so it costs no extra autograd nodes.
    """

    @staticmethod
    def forward(ctx, z: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        big = torch.finfo(z.dtype).max
        return (z * w).clamp_(-big, big).add_(z, alpha=0)

    @staticmethod
    def backward(ctx, g: Tensor):
        (w,) = ctx.saved_tensors
        return g * w, None


@float32_compute_unless_kernel("softmax_ce")
def _weighted_logits_ce(input, target, w, ignore_index, label_smoothing, reduction, sample_weight):
    if not is_soft_target(input, target) and uses_kernel(input):
        # the kernel scales the logits on the fly: no scaled (N, C) copy
        return index_cross_entropy(input, target, None, ignore_index, label_smoothing, reduction, sample_weight,
                                   scale=w.to(device=input.device, dtype=torch.float32))
    input = upcast(input)  # 16-bit logits reach here only when bound for the kernel
    scaled = _ScaleLogits.apply(input, class_view(w.to(dtype=input.dtype, device=input.device), input))
    return cross_entropy_loss(scaled, target, ignore_index=ignore_index, label_smoothing=label_smoothing,
                              reduction=reduction, sample_weight=sample_weight)


@register_loss("iif")
class IIFLoss(Loss):
    """Inverse Image Frequency loss; see :func:`tailwise.functional.iif_loss`.

    The weights are the buffer ``iif``; :meth:`inference_logits` applies them to test logits.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.IIFLoss([500, 50, 5])
        >>> logits = torch.randn(8, 3)
        >>> loss = crit(logits, torch.randint(0, 3, (8,)))
        >>> pred = crit.inference_logits(logits).argmax(1)
    """

    def __init__(self, class_counts, variant: str = "raw", norm: float = 0.0, ignore_index: int = -100,
                 label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.variant = variant
        self.norm = check_nonnegative(norm, "norm")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        self.register_buffer("iif", iif_weights(class_counts, variant, norm).float())

    def inference_logits(self, logits: Tensor) -> Tensor:
        """Test-time scores ``logits * iif`` (the official evaluation)."""
        check_logits(logits, "logits")
        if logits.shape[1] != self.iif.numel():
            raise ValueError(f"logits must have {self.iif.numel()} classes in dimension 1, got shape "
                             f"{tuple(logits.shape)}")
        return logits * class_view(self.iif.to(logits.dtype), logits)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        check_logits(input)
        if input.shape[1] != self.iif.numel():
            raise ValueError(f"input must have {self.iif.numel()} classes (len(class_counts)) in dimension 1, "
                             f"got shape {tuple(input.shape)}")
        return _weighted_logits_ce(input, target, self.iif, self.ignore_index, self.label_smoothing,
                                   self.reduction, sample_weight)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, norm={self.norm}, {super().extra_repr()}"

