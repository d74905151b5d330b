"""Private helpers of the classification family: input checks, priors, masked reductions."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .._reduction import reduce_loss
from .._validation import (assert_values, cached_on_device, check_class_counts, check_class_indices, check_floating,
                           check_reduction, check_weight, host_value_checks)

__all__: list = []


def check_logits(input, name: str = "input", *, exact_2d: bool = False) -> Tensor:
    """Logits must be floating ``(N, C)`` or ``(N, C, d1, ...)`` (``(N, C)`` only if ``exact_2d``)."""
    check_floating(input, name)
    if exact_2d and input.dim() != 2:
        raise ValueError(f"{name} must be logits of shape (N, C), got shape {tuple(input.shape)}")
    if input.dim() < 2:
        raise ValueError(f"{name} must be logits of shape (N, C) or (N, C, d1, ...), got shape {tuple(input.shape)}")
    if input.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class (dimension 1), got shape {tuple(input.shape)}")
    return input


def expected_index_shape(input: Tensor) -> Tuple[int, ...]:
    return (input.shape[0],) + tuple(input.shape[2:])


def check_index_target(input: Tensor, target, *, ignore_index: Optional[int] = None,
                       name: str = "target", values: bool = True) -> Tensor:
    """Integer class indices of shape ``(N, d1, ...)`` in ``[0, C)`` (or ``ignore_index``).

    ``values=False``: type and shape only; the range is left to a kernel that checks it (see
    :func:`tailwise.kernels.softmax_ce.kernel_checks_targets`).
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(target).__name__}")
    shape = expected_index_shape(input)
    if tuple(target.shape) != shape:
        raise ValueError(f"{name} must be class indices of shape {shape} (input is {tuple(input.shape)}), "
                         f"got shape {tuple(target.shape)}")
    check_class_indices(target, input.shape[1], name, ignore_index=ignore_index, values=values)
    return target


def is_soft_target(input: Tensor, target) -> bool:
    """A floating target with the input's shape is a probability target; otherwise indices."""
    return isinstance(target, Tensor) and target.is_floating_point() and target.shape == input.shape


def class_view(vec: Tensor, input: Tensor) -> Tensor:
    """Reshape a per-class ``(C,)`` vector to broadcast along dim 1 of ``input``."""
    return vec.view((1, -1) + (1,) * (input.dim() - 2))


class Like(NamedTuple):
    """The device and dtype a per-class vector should have (instead of an empty tensor: no op)."""

    device: torch.device
    dtype: torch.dtype


def log_prior(class_counts, num_classes: int, *, like, tau: float = 1.0) -> Tensor:
    """``tau * log pi_c`` as a ``(C,)`` tensor in ``like``'s dtype/device (``log`` in float64).

    Computed on ``like``'s device once per ``class_counts`` (content of host data, or a tensor's
    identity and version, see :func:`tailwise._validation.cached_on_device`) and ``tau``: no
    host->device copy and no op per call.
    """
    def build(c):
        counts = check_class_counts(c, num_classes, device=like.device)
        return torch.log(counts / counts.sum()).to(dtype=like.dtype) * tau

    if torch.compiler.is_compiling():
        return build(class_counts)
    return cached_on_device(class_counts, like.device, ("log_prior", num_classes, like.dtype, float(tau)), build)


def from_counts(class_counts, num_classes: int, like, tag, fn) -> Tensor:
    """``fn(counts)`` of validated float64 ``(C,)`` counts, as a tensor in ``like``'s dtype/device.

    Per-class weights derived from ``class_counts`` (priors, IIF or class-balanced weights) are
    computed where the counts live when they already are a tensor on ``like``'s device (a
    module's buffer) or while compiling; host data is turned into weights on the host. Both are
    cached (once per device, and per tensor version for a buffer; ``tag`` names the derivation
    and its hyper-parameters), except while compiling.
    """
    if torch.compiler.is_compiling():
        return fn(check_class_counts(class_counts, num_classes, device=like.device)).to(dtype=like.dtype)
    if isinstance(class_counts, Tensor) and class_counts.device == like.device:
        return cached_on_device(class_counts, like.device, ("from_counts", tag, num_classes, like.dtype),
                                lambda c: fn(check_class_counts(c, num_classes, device=like.device)).to(dtype=like.dtype))
    return cached_on_device(class_counts, like.device, ("from_counts", tag, num_classes, like.dtype),
                            lambda c: fn(check_class_counts(c, num_classes)).to(dtype=like.dtype))


def check_per_class(vec, num_classes: int, name: str, *, like: Tensor) -> Tensor:
    """A per-class vector (tensor or sequence) of length C, finite and non-negative.

    A tensor on ``like``'s device (a module's buffer) is checked where it lives (exact message on
    eager CPU, device-side assert on accelerators and while compiling), once per tensor version;
    host data is validated on the host and converted once per device (both cached, except while
    compiling).
    """
    if isinstance(vec, (int, float)) and not isinstance(vec, bool):
        raise TypeError(f"{name} must be a per-class sequence or 1-D tensor of length {num_classes}, "
                        f"got the scalar {vec!r}")
    if torch.compiler.is_compiling():
        return _per_class(vec, num_classes, name, like.device).to(dtype=like.dtype)
    if isinstance(vec, Tensor) and vec.device == like.device:
        return cached_on_device(vec, like.device, ("per_class", name, num_classes, like.dtype),
                                lambda v: _per_class(v, num_classes, name, like.device).to(dtype=like.dtype))
    return cached_on_device(vec, like.device, ("per_class", name, num_classes, like.dtype),
                            lambda v: _per_class(v, num_classes, name, None).to(dtype=like.dtype))


def _per_class(vec, num_classes: int, name: str, device) -> Tensor:
    try:
        t = torch.as_tensor(vec.detach() if isinstance(vec, Tensor) else vec, dtype=torch.float64, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a per-class sequence or 1-D tensor, got {type(vec).__name__}") from exc
    if t.dim() != 1 or t.numel() != num_classes:
        raise ValueError(f"{name} must have shape ({num_classes},) (one entry per class), got shape {tuple(t.shape)}")
    if not host_value_checks(t):
        assert_values(torch.isfinite(t) & (t >= 0), f"{name} must be finite and non-negative")
    elif not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative, got {t.tolist()}")
    return t


def masked_reduce(loss: Tensor, reduction: str, sample_weight: Optional[Tensor], valid: Optional[Tensor],
                  denom_weight: Optional[Tensor] = None) -> Tensor:
    """Reduce like ``F.cross_entropy``: ``mean`` divides by the number of non-ignored elements
    (or by ``sum(denom_weight)`` over them when class weights are given); ``sample_weight`` is a
    per-element multiplier that does not enter the denominator (as in ``reduce_loss``)."""
    check_reduction(reduction)
    sample_weight = check_weight(sample_weight, loss.shape, "sample_weight")
    if reduction != "mean" or (valid is None and denom_weight is None):
        return reduce_loss(loss, reduction, sample_weight)
    total = reduce_loss(loss, "sum", sample_weight)
    if denom_weight is not None:
        denom = denom_weight.sum() if valid is None else (denom_weight * valid).sum()
    else:
        denom = valid.sum()
    # an all-ignored batch gives 0 (with grad_fn), not the 0/0 = nan of F.cross_entropy; decided
    # on the device (no host read of denom) by dividing by +inf there: total / inf is what
    # total * 0.0 in a torch.where branch gave (+-0, NaN for a non-finite total; gradient 0), in
    # fewer ops forward and backward. (denom is a count or a sum of validated, finite weights:
    # never NaN.) masked_fill_ takes inf as a kernel argument, no scalar tensor on the device.
    denom = denom.to(total.dtype)
    return total / denom.clamp_min(1e-12).masked_fill_(denom <= 0, math.inf)
