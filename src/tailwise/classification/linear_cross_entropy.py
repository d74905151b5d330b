"""Fused linear layer + long-tail cross-entropy that never materialises the ``(N, C)`` logits."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._base import Loss
from .._precision import autocast_disabled
from .._validation import (_check_number, check_class_counts, check_class_indices, check_nonnegative,
                           check_probability, check_reduction)
from ..kernels.linear_ce import linear_cross_entropy
from ..registry import register_loss
from ._common import check_per_class, from_counts

__all__ = ["linear_cross_entropy_loss", "LinearCrossEntropyLoss"]


def _check_inputs(input, weight, target, bias):
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got "
                            f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")
    if input.dim() != 2:
        raise ValueError(f"input must be features of shape (N, H), got shape {tuple(input.shape)}")
    if weight.dim() != 2 or weight.shape[1] != input.shape[1]:
        raise ValueError(f"weight must have shape (C, H) = (C, {input.shape[1]}) (the nn.Linear layout), "
                         f"got shape {tuple(weight.shape)}")
    if weight.shape[0] == 0:
        raise ValueError("weight must have at least one class row, got shape (0, H)")
    if weight.dtype != input.dtype:
        raise TypeError(f"weight must have the input's dtype {input.dtype}, got {weight.dtype}")
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must be None or a tensor of shape ({weight.shape[0]},), got "
                             f"{tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__}")


def linear_cross_entropy_loss(input: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None, *,
                              class_counts=None, tau: float = 1.0, gamma: float = 0.0,
                              class_weight: Optional[Union[Tensor, Sequence[float]]] = None,
                              label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = "mean",
                              chunk_size: Optional[int] = None) -> Tensor:
    r"""Cross-entropy of a linear layer's logits, computed chunk by chunk so the ``(N, C)`` logits
    never exist in memory.

    Logits :math:`z = x W^\top + b`, plus :math:`\tau \log(n_c / \sum n)` when ``class_counts``
    is given (``tau=1`` is Balanced Softmax, Ren et al. NeurIPS 2020; other ``tau`` is logit
    adjustment, Menon et al. ICLR 2021). ``gamma > 0`` gives the softmax focal loss (Lin et al.
    2017) with ``class_weight`` as its per-class ``alpha``. Otherwise ``F.cross_entropy``
    semantics: ``class_weight`` (per class), ``label_smoothing``, ``ignore_index``, and
    ``"mean"`` divides by the number of non-ignored rows, or by the sum of their class weights
    when ``class_weight`` is given (an all-ignored batch gives 0, not NaN).

    Memory: one chunk of logits (``chunk_size`` rows; by default about as many logits as
    ``input`` has elements) plus the gradients of ``input``, ``weight`` and ``bias``, which for
    ``"mean"``/``"sum"`` are computed during the forward (as Liger-Kernel's fused linear
    cross-entropy does) and scaled by the incoming gradient in the backward. ``"none"``
    recomputes each chunk's logits in the backward. On CUDA the per-chunk softmax is the Triton
    ``softmax_ce`` kernel writing the gradient into the chunk's logits; the matmuls are cuBLAS.
    The gradient is not differentiable again (no double backward), and on the Triton path the
    stored gradients are scaled in place, so one backward per forward (no ``retain_graph``
    reuse).

    Args:
        input: features ``(N, H)``.
        weight: classifier weight ``(C, H)`` (``nn.Linear(H, C).weight``), same dtype as input.
        target: class indices ``(N,)``.
        bias: optional ``(C,)``.
        class_counts: per-class training counts for the prior offset (optional).
        tau: scale of the log-prior offset.
        gamma: focal exponent ``>= 0``.
        class_weight: optional per-class weights ``(C,)``.
        label_smoothing: in ``[0, 1]`` (cross-entropy only, ``gamma == 0``).
        ignore_index: target value with no loss and no gradient.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (shape ``(N,)``).
        chunk_size: rows per chunk (``None``: automatic).

    Example:
        >>> import torch, tailwise
        >>> x = torch.randn(8, 16, requires_grad=True); head = torch.nn.Linear(16, 5)
        >>> y = torch.randint(0, 5, (8,))
        >>> loss = tailwise.functional.linear_cross_entropy_loss(x, head.weight, y, head.bias,
        ...                                                      class_counts=[50, 20, 10, 5, 1])
        >>> loss.backward()
    """
    _check_inputs(input, weight, target, bias)
    check_reduction(reduction)
    c = weight.shape[0]
    _check_target(target, input.shape[0], c, ignore_index)
    gamma = check_nonnegative(gamma, "gamma")
    eps = check_probability(label_smoothing, "label_smoothing")
    if gamma > 0 and eps > 0:
        raise ValueError("label_smoothing must be 0 when gamma > 0 (label smoothing is not defined for the "
                         f"focal form), got label_smoothing={eps} and gamma={gamma}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
    cdt = torch.float64 if input.dtype == torch.float64 else torch.float32
    like = input.new_empty(0, dtype=cdt)
    offset = None
    if class_counts is not None:
        tau = _check_number(tau, "tau")
        # host counts become the offset on the input's device once (cached), not a copy per call
        offset = from_counts(class_counts, c, like, ("linear_ce_prior", tau),
                             lambda counts: torch.log(counts / counts.sum()) * tau)
    cw = None if class_weight is None else check_per_class(class_weight, c, "class_weight", like=like)
    # the matmuls run in the dtype of input/weight (pass bf16 tensors for bf16 matmuls), not autocast's
    with autocast_disabled():
        return linear_cross_entropy(input, weight, target.long(), bias, offset, cw, gamma, eps, int(ignore_index),
                                    reduction, chunk_size)


def _check_target(target, n: int, c: int, ignore_index: int) -> None:
    # the (N, C) logits exist only on paper here: check the shape against (N,), the values against C
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of class indices, got {type(target).__name__}")
    if tuple(target.shape) != (n,):
        raise ValueError(f"target must be class indices of shape ({n},) (input is ({n}, H)), "
                         f"got shape {tuple(target.shape)}")
    check_class_indices(target, c, "target", ignore_index=ignore_index)


@register_loss("linear_cross_entropy")
class LinearCrossEntropyLoss(Loss):
    """Fused ``nn.Linear`` + (long-tail) cross-entropy; see :func:`tailwise.functional.linear_cross_entropy_loss`.

    Holds no classifier itself: ``forward(input, weight, target, bias=None)`` takes the head's
    parameters, so it fits any model (``loss = crit(features, model.head.weight, y, model.head.bias)``).
    ``class_counts`` and ``class_weight`` are buffers.

    Example:
        >>> import torch, tailwise
        >>> head = torch.nn.Linear(16, 5)
        >>> crit = tailwise.LinearCrossEntropyLoss(class_counts=[50, 20, 10, 5, 1])
        >>> loss = crit(torch.randn(8, 16), head.weight, torch.randint(0, 5, (8,)), head.bias)
    """

    def __init__(self, class_counts=None, tau: float = 1.0, gamma: float = 0.0, class_weight=None,
                 label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = "mean",
                 chunk_size: Optional[int] = None) -> None:
        super().__init__(reduction)
        self.tau = _check_number(tau, "tau")
        self.gamma = check_nonnegative(gamma, "gamma")
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        self.ignore_index = int(ignore_index)
        self.chunk_size = chunk_size
        self.register_buffer("class_counts", None if class_counts is None else check_class_counts(class_counts))
        cw = None
        if class_weight is not None:
            cw = torch.as_tensor(class_weight, dtype=torch.float32)
            if cw.dim() != 1:
                raise ValueError(f"class_weight must be 1-D (C,), got shape {tuple(cw.shape)}")
        self.register_buffer("class_weight", cw)

    def forward(self, input: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        return linear_cross_entropy_loss(input, weight, target, bias, class_counts=self.class_counts, tau=self.tau,
                                         gamma=self.gamma, class_weight=self.class_weight,
                                         label_smoothing=self.label_smoothing, ignore_index=self.ignore_index,
                                         reduction=self.reduction, chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, gamma={self.gamma}, label_smoothing={self.label_smoothing}, "
                f"ignore_index={self.ignore_index}, {super().extra_repr()}")

