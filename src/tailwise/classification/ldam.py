"""LDAM: label-distribution-aware margins (Cao et al., NeurIPS 2019), the DRW schedule and the
cosine classifier LDAM is trained with."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base import Loss
from .._precision import float32_compute
from .._validation import check_class_counts, check_positive
from ..registry import register_loss
from ._common import check_index_target, check_logits, from_counts
from .class_balanced import class_balanced_weights
from .cross_entropy import cross_entropy_loss

__all__ = ["ldam_margins", "ldam_loss", "drw_weights", "LDAMLoss", "NormedLinear"]


def ldam_margins(class_counts, max_m: float = 0.5) -> Tensor:
    r"""Per-class margins :math:`\Delta_j = K / n_j^{1/4}`, with ``K`` chosen so that the rarest
    class gets ``max_m`` (float64, on the CPU unless ``class_counts`` is a tensor elsewhere).

    Example:
        >>> import tailwise
        >>> tailwise.ldam_margins([10000, 16], max_m=0.5)
        tensor([0.1000, 0.5000], dtype=torch.float64)
    """
    device = class_counts.device if isinstance(class_counts, Tensor) else None
    counts = check_class_counts(class_counts, device=device)
    return _margins(counts, check_positive(max_m, "max_m"))


def _margins(counts: Tensor, max_m: float) -> Tensor:
    m = counts.pow(-0.25)
    return m * (max_m / m.max())


def _ldam(input: Tensor, target: Tensor, margins: Tensor, s: float, class_weight, ignore_index: int,
          reduction: str, sample_weight: Optional[Tensor]) -> Tensor:
    # subtract the target class's margin from its logit only; ignored rows pick any margin
    # (their loss is dropped by ignore_index), so clamp the index instead of branching on data
    safe = target.clamp(0, input.shape[1] - 1)
    m = margins.to(dtype=input.dtype, device=input.device)[safe]
    adjusted = input - F.one_hot(safe, input.shape[1]).to(input.dtype) * m.unsqueeze(1)
    return cross_entropy_loss(s * adjusted, target, class_weight=class_weight, ignore_index=ignore_index,
                              reduction=reduction, sample_weight=sample_weight)


@float32_compute
def ldam_loss(input: Tensor, target: Tensor, class_counts, *, max_m: float = 0.5, s: float = 30.0,
              class_weight: Optional[Union[Tensor, Sequence[float]]] = None, ignore_index: int = -100,
              reduction: str = "mean", sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""LDAM loss :math:`\mathrm{CE}(s\,(z - \Delta_y e_y),\ y)` with :math:`\Delta_j \propto n_j^{-1/4}`.

    Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
    NeurIPS 2019 (arXiv 1906.07413); defaults (``max_m=0.5``, ``s=30``) from the official
    ``kaidic/LDAM-DRW`` ``LDAMLoss``. The margin is subtracted from the target logit *before*
    scaling by ``s``, as in the code. LDAM is meant for cosine logits (:class:`NormedLinear`,
    values in [-1, 1]); ``s`` rescales them.

    ``class_weight`` is the code's CE ``weight`` (e.g. :func:`drw_weights` for LDAM-DRW):
    ``"mean"`` divides by the sum of the targets' class weights, as ``F.cross_entropy``.

    Args:
        input: logits ``(N, C)``.
        target: class indices ``(N,)``.
        class_counts: per-class training counts ``(C,)``.
        max_m: margin of the rarest class.
        s: logit scale.
        class_weight: optional per-class weights ``(C,)``.
        ignore_index: target value that contributes nothing.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        sample_weight: optional per-sample weights ``(N,)`` (multiply the loss, not the
            ``"mean"`` denominator).

    Example:
        >>> import torch, tailwise
        >>> z = torch.tensor([[0.5, 0.2]]); y = torch.tensor([1])
        >>> tailwise.functional.ldam_loss(z, y, class_counts=[100, 10], s=1.0)
        tensor(1.1711)
    """
    check_logits(input, exact_2d=True)
    check_index_target(input, target, ignore_index=ignore_index)
    max_m = check_positive(max_m, "max_m")
    # host counts become margins on the input's device once (cached), not a copy per call
    margins = from_counts(class_counts, input.shape[1], input, ("ldam", max_m),
                          lambda counts: _margins(counts, max_m))
    s = check_positive(s, "s")
    return _ldam(input, target, margins, s, class_weight, ignore_index, reduction, sample_weight)


def drw_weights(class_counts, epoch: int, start_epoch: int = 160, beta: float = 0.9999) -> Tensor:
    r"""Deferred re-weighting (DRW): uniform class weights before ``start_epoch``, then
    class-balanced weights :math:`(1-\beta)/(1-\beta^{n_c})` normalised to sum to ``C``.

    The schedule of ``kaidic/LDAM-DRW`` (``train_rule == 'DRW'``: ``betas = [0, 0.9999]``, index
    ``epoch // 160``); epochs are 0-based. Returns a float32 ``(C,)`` tensor to pass as
    ``class_weight``.

    Example:
        >>> import tailwise
        >>> tailwise.drw_weights([100, 10], epoch=0)
        tensor([1., 1.])
        >>> w = tailwise.drw_weights([100, 10], epoch=160)
        >>> bool(w[1] > w[0]) and abs(float(w.sum()) - 2.0) < 1e-6
        True
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int (0-based), got {epoch!r}")
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
        raise ValueError(f"start_epoch must be a non-negative int, got {start_epoch!r}")
    counts = check_class_counts(class_counts)
    if epoch < start_epoch:
        return torch.ones(counts.numel(), dtype=torch.float32)
    return class_balanced_weights(counts, beta=beta).to(torch.float32)


@register_loss("ldam")
class LDAMLoss(Loss):
    """LDAM loss; see :func:`tailwise.functional.ldam_loss`. Margins are a buffer.

    For LDAM-DRW set ``loss.class_weight = tailwise.drw_weights(counts, epoch)`` each epoch
    (or pass ``class_weight=`` to ``forward``).

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.LDAMLoss([500, 50, 5])
        >>> loss = crit(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, class_counts, max_m: float = 0.5, s: float = 30.0, class_weight=None,
                 ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("margins", ldam_margins(class_counts, max_m).to(torch.float32))
        self.max_m = float(max_m)
        self.s = check_positive(s, "s")
        self.ignore_index = int(ignore_index)
        cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", cw)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None,
                class_weight: Optional[Tensor] = None) -> Tensor:
        check_logits(input, exact_2d=True)
        check_index_target(input, target, ignore_index=self.ignore_index)
        if self.margins.numel() != input.shape[1]:
            raise ValueError(f"input must have {self.margins.numel()} classes (one per class count), "
                             f"got shape {tuple(input.shape)}")
        cw = self.class_weight if class_weight is None else class_weight
        return float32_compute(_ldam)(input, target, self.margins, self.s, cw, self.ignore_index,
                                      self.reduction, sample_weight)

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, {super().extra_repr()}"


class NormedLinear(nn.Module):
    r"""Cosine classifier :math:`z_{ij} = \hat{x}_i \cdot \hat{w}_j` (unit-norm features and
    class weights), the last layer LDAM is trained with (``kaidic/LDAM-DRW`` ``NormedLinear``).

    The weight is stored as ``(in_features, out_features)`` and initialised as in the official
    code (uniform in [-1, 1], then each column renormalised to unit norm).

    Example:
        >>> import torch, tailwise
        >>> head = tailwise.NormedLinear(16, 5)
        >>> z = head(torch.randn(4, 16))
        >>> bool(z.abs().max() <= 1 + 1e-6)
        True
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
