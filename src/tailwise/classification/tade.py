"""TADE: test-agnostic long-tailed recognition with three skill-diverse experts (Zhang et al., NeurIPS 2022)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import (check_class_counts, check_class_indices, check_floating, check_nonnegative,
                           check_positive, check_probability, check_reduction)
from ..registry import register_loss

__all__ = ["tade_loss", "tade_inverse_prior", "tade_test_time_weights", "TADELoss"]

ExpertLogits = Union[Tensor, Sequence[Tensor]]
_LOG_EPS = 1e-9  # official: log(prior + 1e-9)


def _stack_experts(expert_logits: ExpertLogits, name: str, num_experts: Optional[int] = None) -> Tensor:
    if isinstance(expert_logits, Tensor):
        x = expert_logits
        check_floating(x, name)
        if x.dim() != 3:
            raise ValueError(f"{name} must be a (E, N, C) tensor or a sequence of E (N, C) logits, "
                             f"got shape {tuple(x.shape)}")
    elif isinstance(expert_logits, (list, tuple)):
        if len(expert_logits) == 0:
            raise ValueError(f"{name} must hold at least one expert's (N, C) logits, got an empty sequence")
        for i, t in enumerate(expert_logits):
            check_floating(t, f"{name}[{i}]")
            if t.dim() != 2 or t.shape != expert_logits[0].shape:
                raise ValueError(f"{name}[{i}] must be (N, C) logits like {name}[0] "
                                 f"{tuple(expert_logits[0].shape)}, got shape {tuple(t.shape)}")
        x = torch.stack(list(expert_logits))
    else:
        raise TypeError(f"{name} must be a (E, N, C) tensor or a list/tuple of (N, C) tensors, "
                        f"got {type(expert_logits).__name__}")
    if num_experts is not None and x.shape[0] != num_experts:
        raise ValueError(f"{name} must hold {num_experts} experts (E={num_experts}), got {x.shape[0]}")
    return x


def tade_inverse_prior(prior: Tensor) -> Tensor:
    r"""The "inverse" prior of TADE's third expert: the prior values in reversed rank order.

    The class with the k-th smallest prior gets the k-th largest prior value (official
    ``DiverseExpertLoss.inverse_prior``), e.g. ``[0.7, 0.2, 0.1] -> [0.1, 0.2, 0.7]``. It is
    *not* ``1 / prior``. Ties are ranked with a stable sort (the official ``torch.sort`` is not
    stable; tied classes have equal priors, so only which of them gets which reversed value can
    differ).
    """
    value, order = torch.sort(prior, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(prior.numel(), device=prior.device)
    return value[prior.numel() - 1 - rank]


@float32_compute
def tade_loss(expert_logits: ExpertLogits, target: Tensor, class_counts, tau: float = 2.0, *,
              sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""TADE's skill-diverse three-expert training objective (``DiverseExpertLoss``).

    With :math:`\pi` the training prior (``class_counts`` normalised) and :math:`\bar\pi` its
    inverse (:func:`tade_inverse_prior`):

    .. math::
        \ell = \mathrm{CE}(z^{(1)}, y) + \mathrm{CE}(z^{(2)} + \log\pi, y)
             + \mathrm{CE}(z^{(3)} + \log\pi - \tau \log\bar\pi, y),

    i.e. expert 1 fits the long-tailed training distribution (plain softmax), expert 2 the
    uniform one (balanced softmax) and expert 3 an inversely long-tailed one (``tau`` is the
    paper's :math:`\lambda`, default 2). As in the official code (github
    Vanint/TADE-AgnosticLT, ``model/loss.py``) the three terms are summed with weight 1 and
    ``log(prior + 1e-9)`` is used. ``reduction="mean"`` equals the official sum of three
    batch-mean cross-entropies; ``"none"`` gives the per-sample sum over experts ``(N,)``.

    Args:
        expert_logits: ``(3, N, C)`` tensor or a sequence of three ``(N, C)`` logits.
        target: class indices ``(N,)``.
        class_counts: per-class training counts ``(C,)``.
        tau: :math:`\lambda \ge 0` of the inverse-prior expert.

    Example:
        >>> import torch
        >>> from tailwise.classification.tade import tade_loss
        >>> z = torch.zeros(3, 2, 4)
        >>> round(tade_loss(z, torch.tensor([0, 3]), [10, 5, 2, 1]).item(), 4) > 0
        True
    """
    check_reduction(reduction)
    check_nonnegative(tau, "tau")
    x = _stack_experts(expert_logits, "expert_logits", 3)
    _, n, c = x.shape
    if not isinstance(target, Tensor) or target.dim() != 1 or target.shape[0] != n:
        raise ValueError(f"target must be class indices of shape ({n},) matching expert_logits (E, N, C) = "
                         f"{tuple(x.shape)}, got {tuple(target.shape) if isinstance(target, Tensor) else target!r}")
    check_class_indices(target, c, "target")
    counts = check_class_counts(class_counts, c, device=x.device)
    prior = counts / counts.sum()
    log_prior = torch.log(prior + _LOG_EPS)
    log_inv = torch.log(tade_inverse_prior(prior) + _LOG_EPS)
    # one cross_entropy over the stacked, per-expert shifted logits
    shift = torch.stack([torch.zeros_like(log_prior), log_prior, log_prior - float(tau) * log_inv]).to(x.dtype)
    shifted = x + shift.unsqueeze(1)
    t = target.long()
    per = F.cross_entropy(shifted.reshape(3 * n, c), t.repeat(3), reduction="none").view(3, n).sum(0)
    return reduce_loss(per, reduction, sample_weight)


@register_loss("tade")
class TADELoss(Loss):
    r"""TADE's three-expert loss with the training ``class_counts`` fixed at construction.

    ``forward(expert_logits, target)`` with ``expert_logits`` a ``(3, N, C)`` tensor or a
    sequence of three ``(N, C)`` logits. See :func:`tade_loss`; for the test-time expert
    aggregation see :func:`tade_test_time_weights`.

    Example:
        >>> import torch
        >>> from tailwise.classification.tade import TADELoss
        >>> crit = TADELoss(class_counts=[100, 10, 1])
        >>> experts = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
        >>> crit(experts, torch.tensor([0, 1, 2, 0])).backward()
    """

    def __init__(self, class_counts, tau: float = 2.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        counts = check_class_counts(class_counts)
        check_nonnegative(tau, "tau")
        self.tau = float(tau)
        self.register_buffer("class_counts", counts.float())

    def forward(self, expert_logits: ExpertLogits, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return tade_loss(expert_logits, target, self.class_counts, self.tau, sample_weight=sample_weight,
                         reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"num_classes={self.class_counts.numel()}, tau={self.tau}, reduction={self.reduction!r}"


def tade_test_time_weights(expert_logits_view1: ExpertLogits, expert_logits_view2: ExpertLogits, *,
                           epochs: int = 5, batch_size: int = 128, lr: float = 0.1, momentum: float = 0.9,
                           weight_decay: float = 5e-4, nesterov: bool = True, min_weight: float = 0.05,
                           eps: float = 1e-6) -> Tensor:
    r"""TADE's test-time self-supervised aggregation: expert weights from unlabeled test data.

    Learns raw weights :math:`w \in \mathbb R^E` (initialised to :math:`1/E`) and aggregates
    the experts' logits with :math:`a = \mathrm{softmax}(w)`:
    :math:`\hat z = \sum_e a_e z^{(e)}`. The objective maximises the prediction stability
    between two augmented views of the same test images,
    :math:`\max_w \frac1B\sum_i \cos(\mathrm{softmax}(\hat z_i^{v_1}), \mathrm{softmax}(\hat z_i^{v_2}))`,
    with SGD over mini-batches, stopping after an epoch in which some weight falls below
    ``min_weight``. Defaults follow the official ``test_training_cifar.py`` and
    ``configs/test_time_cifar100_*.json`` (SGD lr 0.1, momentum 0.9, Nesterov, weight decay
    5e-4, batch 128, 5 epochs, stop at 0.05, cosine eps 1e-6); the ImageNet-LT config uses
    lr 0.025.

    Differences from the official script, for a deterministic, model-free function: the logits
    of both views are precomputed (the official script re-augments the images every epoch) and
    mini-batches are taken in order rather than shuffled.

    Args:
        expert_logits_view1, expert_logits_view2: ``(E, N, C)`` tensors or sequences of E
            ``(N, C)`` logits of the same N test samples under two augmentations.

    Returns:
        The normalised aggregation weights :math:`a` ``(E,)`` (float32, summing to 1).

    Example:
        >>> import torch
        >>> from tailwise.classification.tade import tade_test_time_weights
        >>> v1 = torch.randn(3, 64, 10); v2 = v1 + 0.1 * torch.randn(3, 64, 10)
        >>> w = tade_test_time_weights(v1, v2)
        >>> round(w.sum().item(), 5)
        1.0
    """
    a = _stack_experts(expert_logits_view1, "expert_logits_view1").detach().float()
    b = _stack_experts(expert_logits_view2, "expert_logits_view2").detach().float()
    if a.shape != b.shape:
        raise ValueError(f"expert_logits_view2 must have the shape of expert_logits_view1 {tuple(a.shape)}, "
                         f"got {tuple(b.shape)}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    check_positive(lr, "lr")
    check_nonnegative(weight_decay, "weight_decay")
    check_probability(min_weight, "min_weight")
    e, n, _ = a.shape
    w = torch.full((e,), 1.0 / e, device=a.device, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    with torch.enable_grad():
        for _ in range(epochs):
            for start in range(0, n, batch_size):
                agg = torch.softmax(w, 0)
                p1 = torch.softmax(torch.einsum("e,enc->nc", agg, a[:, start:start + batch_size]), 1)
                p2 = torch.softmax(torch.einsum("e,enc->nc", agg, b[:, start:start + batch_size]), 1)
                loss = -F.cosine_similarity(p1, p2, dim=1, eps=eps).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            if bool((torch.softmax(w.detach(), 0) < min_weight).any()):
                break
    return torch.softmax(w.detach(), 0)
