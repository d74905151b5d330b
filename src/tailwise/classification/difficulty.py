"""Class-wise difficulty weighting of cross-entropy (Sinha et al., ACCV 2020; Difficulty-Net)."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .._base import Loss
from .._reduction import rejects_weight
from .._validation import assert_values, cached_on_device, check_nonnegative, host_value_checks
from ..registry import register_loss
from ._common import check_logits, masked_reduce
from .cross_entropy import cross_entropy_loss

__all__ = ["difficulty_weights", "difficulty_loss", "DifficultyWeightedLoss"]

_DYNAMIC_EPS = 0.01  # CDB-loss: bias = max acc / (min acc + 0.01)


def _check_accuracies(per_class_acc, num_classes: Optional[int] = None) -> Tensor:
    try:
        acc = torch.as_tensor(per_class_acc.detach() if isinstance(per_class_acc, Tensor) else per_class_acc,
                              dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"per_class_acc must be a 1-D tensor or sequence of accuracies, got "
                        f"{type(per_class_acc).__name__}") from exc
    if acc.dim() != 1 or acc.numel() == 0 or (num_classes is not None and acc.numel() != num_classes):
        want = f"({num_classes},)" if num_classes is not None else "(C,)"
        raise ValueError(f"per_class_acc must have shape {want} (one accuracy per class), got shape {tuple(acc.shape)}")
    if not host_value_checks(acc):
        assert_values(torch.isfinite(acc) & (acc >= 0) & (acc <= 1),
                      "per_class_acc must be finite accuracies in [0, 1]")
    elif not bool(torch.isfinite(acc).all()) or bool((acc < 0).any()) or bool((acc > 1).any()):
        raise ValueError(f"per_class_acc must be finite accuracies in [0, 1] (a class without held-out samples "
                         f"needs a value, e.g. its previous accuracy), got {acc.tolist()}")
    return acc


def difficulty_weights(per_class_acc, tau: Union[float, str] = 1.0) -> Tensor:
    r"""Per-class weights :math:`w_c = (1 - a_c)^{\tau}`, normalised to :math:`\sum_c w_c = C`.

    ``a_c`` is the accuracy (recall) of class ``c`` measured on held-out data. Normalising to
    mean 1 keeps the loss scale (and the effective learning rate) independent of how hard the
    classes are overall. If every class is perfectly classified (all weights 0) the weights are
    uniform (1). ``tau="dynamic"`` sets :math:`\tau = \sigma(\max_c a_c / (\min_c a_c + 0.01))`
    as in the ``CDB_loss`` of hitachi-rd-cv/CDB-loss (harder spread, larger tau). Returns float64 ``(C,)``.

    Example:
        >>> import tailwise
        >>> tailwise.difficulty_weights([0.9, 0.5, 0.0], tau=1.0)
        tensor([0.1875, 0.9375, 1.8750], dtype=torch.float64)
    """
    acc = _check_accuracies(per_class_acc)
    host = host_value_checks(acc)
    if tau == "dynamic":
        if host:
            bias = float(acc.max()) / (float(acc.min()) + _DYNAMIC_EPS)
            tau = 1.0 / (1.0 + math.exp(-bias))
        else:  # the same on the device, without reading acc on the host
            tau = torch.sigmoid(acc.max() / (acc.min() + _DYNAMIC_EPS))
    elif isinstance(tau, str):
        raise ValueError(f"tau must be a number >= 0 or 'dynamic', got {tau!r}")
    else:
        tau = check_nonnegative(tau, "tau")
    w = (1.0 - acc).pow(tau)
    s = w.sum()
    if not host:
        return torch.where(s > 0, w / s.clamp_min(torch.finfo(s.dtype).tiny) * acc.numel(), torch.ones_like(acc))
    if not bool(s > 0):
        return torch.ones_like(acc)
    return w / s * acc.numel()


def _class_weighted_ce(input: Tensor, target: Tensor, class_weight: Tensor, ignore_index: int,
                       normalize_by_weight: bool, reduction: str, sample_weight: Optional[Tensor]) -> Tensor:
    if normalize_by_weight:
        return cross_entropy_loss(input, target, class_weight=class_weight, ignore_index=ignore_index,
                                  reduction=reduction, sample_weight=sample_weight)
    per = cross_entropy_loss(input, target, class_weight=class_weight, ignore_index=ignore_index,
                             reduction="none")
    return masked_reduce(per, reduction, sample_weight, target != ignore_index)


@rejects_weight
def difficulty_loss(input: Tensor, target: Tensor, per_class_acc, *, tau: Union[float, str] = 1.0,
                    ignore_index: int = -100, normalize_by_weight: bool = False, reduction: str = "mean",
                    sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Cross-entropy with class weights :math:`w_c \propto (1 - \mathrm{acc}_c)^{\tau}`
    (:func:`difficulty_weights`, mean 1) from the given per-class accuracies.

    The pure form of :class:`DifficultyWeightedLoss` (which keeps the accuracies as state and
    fills NaN entries); here ``per_class_acc`` must be finite, shape ``(C,)``.

    Example:
        >>> import torch
        >>> from tailwise.functional import difficulty_loss
        >>> logits, y = torch.zeros(2, 3), torch.tensor([0, 2])
        >>> difficulty_loss(logits, y, torch.tensor([0.9, 0.5, 0.5]))  # (0.27 + 1.36) / 2 * ln 3
        tensor(0.8989)
    """
    check_logits(input)
    dtype = input.dtype if input.is_floating_point() else torch.float32
    if (isinstance(per_class_acc, Tensor) and per_class_acc.device == input.device) or torch.compiler.is_compiling():
        w = difficulty_weights(_check_accuracies(per_class_acc, input.shape[1]), tau).to(dtype=dtype)
    else:  # host data: weights computed on the host once per device (cached), no copy per call
        w = cached_on_device(per_class_acc, input.device, ("difficulty", tau, input.shape[1], dtype),
                             lambda a: difficulty_weights(_check_accuracies(a, input.shape[1]), tau).to(dtype=dtype))
    return _class_weighted_ce(input, target, w, int(ignore_index), bool(normalize_by_weight), reduction, sample_weight)


@register_loss("difficulty")
class DifficultyWeightedLoss(Loss):
    r"""Cross-entropy re-weighted by per-class difficulty :math:`(1 - \mathrm{acc}_c)^{\tau}`.

    A heuristic form of class-wise difficulty-balanced (CDB) loss (Sinha et al., ACCV 2020) and
    of Difficulty-Net's learned weights: call :meth:`update_accuracies` with per-class accuracies
    measured on held-out data (e.g. once per epoch); the loss uses the resulting weights
    (see :func:`difficulty_weights`: normalised to mean 1) as ``class_weight`` of cross-entropy.
    Until the first update all weights are 1 (plain CE).

    State (buffers, saved in ``state_dict``): ``class_weight`` ``(C,)``, ``per_class_acc``
    ``(C,)``, ``num_updates``. In distributed training compute the accuracies on the global
    held-out set (or all-reduce correct / total counts) and feed the same values on every rank.

    ``"mean"`` divides by the number of non-ignored samples (``normalize_by_weight=False``,
    default: the weights then set each class's share of the gradient and, being mean-1, keep the
    scale) or by the sum of their weights (``True``, the ``F.cross_entropy(weight=...)`` convention).

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.DifficultyWeightedLoss(num_classes=3, tau=2.0)
        >>> crit.update_accuracies(torch.tensor([0.95, 0.7, 0.2]))
        tensor([0.0102, 0.3686, 2.6212])
        >>> loss = crit(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, num_classes: int, tau: Union[float, str] = 1.0, ignore_index: int = -100,
                 normalize_by_weight: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if tau != "dynamic":
            if isinstance(tau, str):
                raise ValueError(f"tau must be a number >= 0 or 'dynamic', got {tau!r}")
            tau = check_nonnegative(tau, "tau")
        self.num_classes = num_classes
        self.tau = tau
        self.ignore_index = int(ignore_index)
        self.normalize_by_weight = bool(normalize_by_weight)
        self.register_buffer("class_weight", torch.ones(num_classes))
        self.register_buffer("per_class_acc", torch.full((num_classes,), float("nan")))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update_accuracies(self, per_class_acc) -> Tensor:
        """Set the per-class accuracies (values in [0, 1], shape ``(C,)``); returns the new weights.

        A NaN entry (a class with no held-out samples, as ``tailwise.metrics.per_class_recall``
        reports it) keeps that class's previous accuracy, or, before any accuracy is known for
        it, takes the mean of the known ones. All-NaN raises ``ValueError``.
        """
        if isinstance(per_class_acc, Tensor) or isinstance(per_class_acc, (list, tuple)):
            raw = torch.as_tensor(per_class_acc.detach() if isinstance(per_class_acc, Tensor) else per_class_acc,
                                  dtype=torch.float64).cpu()
            if raw.dim() == 1 and raw.numel() == self.num_classes and bool(torch.isnan(raw).any()):
                if bool(torch.isnan(raw).all()):
                    raise ValueError("per_class_acc must have at least one finite accuracy, got all NaN")
                prev = self.per_class_acc.detach().double().cpu()
                fill = torch.where(torch.isnan(prev), raw[~torch.isnan(raw)].mean(), prev)
                per_class_acc = torch.where(torch.isnan(raw), fill, raw)
        acc = _check_accuracies(per_class_acc, self.num_classes)
        w = difficulty_weights(acc, self.tau)
        self.per_class_acc.copy_(acc.to(self.per_class_acc))
        self.class_weight.copy_(w.to(self.class_weight))
        self.num_updates += 1
        return self.class_weight.clone()

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        check_logits(input)
        if input.shape[1] != self.num_classes:
            raise ValueError(f"input must have num_classes={self.num_classes} classes in dimension 1, "
                             f"got shape {tuple(input.shape)}")
        return _class_weighted_ce(input, target, self.class_weight, self.ignore_index, self.normalize_by_weight,
                                  self.reduction, sample_weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau!r}, {super().extra_repr()}"

