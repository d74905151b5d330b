"""Input handling shared by the regression losses (private)."""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor

from .._validation import (assert_values, cached_on_device, check_finite, check_floating, check_same_shape,
                           host_value_checks)

SigmaLike = Union[float, int, Tensor]


def check_pair(pred: Tensor, target: Tensor, *, pred_name: str = "pred") -> None:
    """Floating tensors of the same shape, with a finite target (labels are data, never NaN)."""
    check_floating(pred, pred_name)
    check_floating(target, "target")
    check_same_shape(pred, target, pred_name, "target")
    check_finite(target, "target")


def as_rows(pred: Tensor, target: Tensor, *, pred_name: str = "pred") -> Tuple[Tensor, Tensor]:
    """Validate a (N,), (N, 1) or (N, D) pair and return both as (N, D) views.

    Balanced MSE treats each sample's label as a point in R^D, so the per-sample loss is indexed by
    the first dimension only.
    """
    check_pair(pred, target, pred_name=pred_name)
    if pred.dim() == 1:
        return pred.unsqueeze(1), target.unsqueeze(1)
    if pred.dim() != 2:
        raise ValueError(f"{pred_name} must be (N,) or (N, D) with one row per sample, "
                         f"got shape {tuple(pred.shape)}")
    return pred, target


def as_sigma(value: SigmaLike, name: str, like: Tensor) -> Tensor:
    """A positive scalar tensor in ``like``'s dtype/device (differentiable if ``value`` is)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar (a tensor with one element), "
                             f"got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if host_value_checks(value):
            v = float(value.detach().reshape(()))
            if not v > 0 or v != v or v == float("inf"):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        else:
            v = value.detach().reshape(())
            assert_values((v > 0) & torch.isfinite(v), f"{name} must be a finite number > 0")
        return value.reshape(()).to(like.dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    v = float(value)
    if not v > 0 or v == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    # a fill kernel, not a host->device copy of a Python scalar (that one synchronises on CUDA)
    return torch.full((), v, dtype=like.dtype, device=like.device)


def as_stat(x, name: str, like: Tensor) -> Tensor:
    """A floating tensor of statistics (GMM / bin parameters) on ``like``'s device and dtype.

    A tensor already on that device (a module's buffer) is checked in place (finite: exact
    message on eager CPU, device-side assert otherwise); host data (sequences, arrays, tensors
    elsewhere) is validated on the host and converted once per device (cached).
    """
    if isinstance(x, Tensor) and (x.device == like.device or _traced()):
        if not x.is_floating_point():
            x = x.to(torch.float64)
        check_finite(x, name)
        return x.to(device=like.device, dtype=like.dtype)
    if _traced():
        return _host_stat(x, name).to(device=like.device, dtype=like.dtype)
    return cached_on_device(x, like.device, ("stat", name, like.dtype), lambda v: _host_stat(v, name).to(like.dtype))


def _traced() -> bool:
    return torch.compiler.is_compiling()


def _host_stat(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a tensor or a sequence of numbers, got "
                            f"{type(x).__name__}") from exc
    if not x.is_floating_point():
        x = x.to(torch.float64)
    check_finite(x, name)
    return x


def check_all_positive(x: Tensor, name: str) -> None:
    if not host_value_checks(x):
        assert_values(x.detach() > 0, f"{name} must be strictly positive")
        return
    bad = ~(x.detach() > 0)
    if bool(bad.any()):
        i = tuple(int(j) for j in bad.nonzero()[0])
        raise ValueError(f"{name} must be strictly positive, got {x.detach()[i].item()} at index "
                         f"{i[0] if len(i) == 1 else i}")


def need_batch(n: int, loss: str) -> None:
    if n < 2:
        raise ValueError(
            f"{loss} needs a batch of at least 2 samples (the other targets of the batch are its "
            f"Monte-Carlo samples of the label distribution), got {n}. For batch size 1 use "
            f"GAILoss (fit a GMM with GAILoss.from_labels) or BNILoss (BNILoss.from_labels), which "
            f"take the label distribution from the training set instead.")
