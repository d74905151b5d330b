"""Difficulty-Net (Sinha & Ohashi, WACV 2023): a meta-learned network that maps per-class
held-out accuracies to class weights."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_floating, check_nonnegative, check_positive, check_tensor
from ..registry import register_loss
from ._common import check_index_target, check_logits

__all__ = ["DifficultyNet", "difficulty_net_weights", "difficulty_net_driver_loss", "difficulty_net_loss",
           "difficulty_net_step", "DifficultyNetLoss"]


class DifficultyNet(nn.Module):
    r"""The Difficulty-Net MLP :math:`C \to h \to h \to C` (ReLU, sigmoid output): per-class
    accuracies :math:`a \in [0, 1]^C` in, relative difficulties :math:`d \in (0, 1)^C` out.

    The whole accuracy vector goes in, so a class's difficulty depends on the others'
    accuracies. Defaults are the CIFAR configuration of hitachi-rd-cv/Difficulty_Net
    (``hidden=128``, no biases: ``VNet``); the ImageNet-LT/Places-LT configuration uses
    ``hidden=1024, bias=True``.

    Example:
        >>> import torch, tailwise
        >>> net = tailwise.DifficultyNet(10)
        >>> d = net(torch.rand(10))
        >>> d.shape, bool(((d > 0) & (d < 1)).all())
        (torch.Size([10]), True)
    """

    def __init__(self, num_classes: int, hidden: int = 128, bias: bool = False) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Linear(num_classes, hidden, bias=bias), nn.ReLU(),
                                 nn.Linear(hidden, hidden, bias=bias), nn.ReLU(),
                                 nn.Linear(hidden, num_classes, bias=bias), nn.Sigmoid())

    def forward(self, accuracy: Tensor) -> Tensor:
        check_floating(accuracy, "accuracy", ndim=(1, 2))
        if accuracy.shape[-1] != self.num_classes:
            raise ValueError(f"accuracy must have {self.num_classes} entries (one per class), got shape "
                             f"{tuple(accuracy.shape)}")
        return self.net(accuracy)


def difficulty_net_weights(difficulty: Tensor) -> Tensor:
    r"""Class weights :math:`w = C\,d / \sum_c d_c` (mean 1) from Difficulty-Net's output.

    Example:
        >>> import torch, tailwise
        >>> tailwise.difficulty_net_weights(torch.tensor([0.2, 0.6]))
        tensor([0.5000, 1.5000])
    """
    check_floating(difficulty, "difficulty", ndim=1)
    return difficulty * (difficulty.numel() / difficulty.sum())


def difficulty_net_driver_loss(difficulty: Tensor, accuracy: Tensor) -> Tensor:
    r"""The driver loss :math:`\mathrm{MSE}\big(d,\ 1 - a / (\sum_c a_c + 10^{-12})\big)` that
    anchors the network's output to the accuracies (weighted by ``lam`` in the meta step).

    Example:
        >>> import torch, tailwise
        >>> tailwise.difficulty_net_driver_loss(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))
        tensor(0.2500)
    """
    check_floating(difficulty, "difficulty")
    check_floating(accuracy, "accuracy")
    if difficulty.shape[-1] != accuracy.shape[-1]:
        raise ValueError(f"accuracy must have {difficulty.shape[-1]} entries, got shape {tuple(accuracy.shape)}")
    target = 1.0 - accuracy / (accuracy.sum(-1, keepdim=True) + 1e-12)
    return F.mse_loss(difficulty, target.to(difficulty.dtype).expand_as(difficulty))


@float32_compute
def difficulty_net_loss(input: Tensor, target: Tensor, class_weight: Tensor, *, reduction: str = "mean",
                        sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Class-weighted cross-entropy :math:`\frac{1}{N}\sum_i w_{y_i}\,\mathrm{CE}(z_i, y_i)` with
    Difficulty-Net weights; ``"mean"`` is the plain mean over samples (the official code's
    ``torch.mean(loss * weights)``), not ``F.cross_entropy``'s division by the weight sum.

    Example:
        >>> import torch, tailwise
        >>> z = torch.zeros(2, 2); y = torch.tensor([0, 1])
        >>> tailwise.functional.difficulty_net_loss(z, y, torch.tensor([0.5, 1.5]))
        tensor(0.6931)
    """
    check_logits(input, exact_2d=True)
    check_index_target(input, target)
    check_floating(class_weight, "class_weight", ndim=1)
    if class_weight.numel() != input.shape[1]:
        raise ValueError(f"class_weight must have shape ({input.shape[1]},), got {tuple(class_weight.shape)}")
    ce = F.cross_entropy(input, target, reduction="none")
    return reduce_loss(ce * class_weight.to(ce.dtype)[target], reduction, sample_weight)


def difficulty_net_step(model: nn.Module, net: DifficultyNet, optimizer: torch.optim.Optimizer, accuracy: Tensor,
                        inputs: Tensor, targets: Tensor, meta_inputs: Tensor, meta_targets: Tensor, *, lr: float,
                        lam: float = 0.3, meta_grad: bool = False,
                        per_sample_loss: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tensor:
    r"""One Difficulty-Net update; returns the class weights (detached) to train ``model`` with.

    1. :math:`d = \mathrm{DN}(a)`, :math:`w = C d / \sum d`; a virtual SGD step
       :math:`\theta' = \theta - \mathrm{lr}\,\nabla_\theta \frac{1}{B}\sum_i w_{y_i} \ell_i(\theta)`
       on ``(inputs, targets)``, through :func:`torch.func.functional_call` (``model``'s own
       parameters and buffers are left untouched: BatchNorm statistics are updated on copies).
    2. ``optimizer`` (over ``net``'s parameters) steps on
       :math:`\mathrm{CE}(f_{\theta'}(x_{meta}), y_{meta}) + \mathrm{lam}\cdot\mathrm{driver}(d, a)`.
    3. The returned weights are recomputed from the updated network without gradient.

    ``meta_grad=True`` keeps the weights in the graph, so the meta loss's gradient reaches the
    network through the virtual step, as the paper describes (second-order). ``meta_grad=False``
    matches the official code (hitachi-rd-cv/Difficulty_Net), where ``torch.tensor(class_weights)``
    detaches the weights: the network then learns from the driver loss alone, and the virtual
    step has no effect on it. Defaults: ``lam=0.3``; the code's ``lr`` is the main learning rate.
    ``per_sample_loss`` defaults to unreduced cross-entropy (the paper also uses Balanced
    Softmax on ImageNet-LT/Places-LT).

    Example:
        >>> import torch, tailwise
        >>> model = torch.nn.Linear(4, 3); net = tailwise.DifficultyNet(3)
        >>> opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        >>> w = tailwise.difficulty_net_step(model, net, opt, torch.tensor([0.9, 0.5, 0.1]), x, y, x, y, lr=0.1)
        >>> w.shape
        torch.Size([3])
    """
    from torch.func import functional_call

    lr = check_positive(lr, "lr")
    lam = check_nonnegative(lam, "lam")
    check_floating(accuracy, "accuracy", ndim=1)
    loss_fn = per_sample_loss or (lambda z, y: F.cross_entropy(z, y, reduction="none"))
    acc = accuracy.detach().to(next(net.parameters()).device)
    d = net(acc)
    w = difficulty_net_weights(d)
    if not meta_grad:
        w = w.detach()
    params = dict(model.named_parameters())
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    out = functional_call(model, (params, buffers), (inputs,))
    loss = (loss_fn(out, targets) * w.to(out.dtype)[targets]).mean()
    names = [k for k, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=meta_grad, allow_unused=True)
    virtual = dict(params)
    for k, g in zip(names, grads):
        if g is not None:
            virtual[k] = params[k] - lr * g
    meta_out = functional_call(model, (virtual, buffers), (meta_inputs,))
    meta_loss = F.cross_entropy(meta_out, meta_targets) + lam * difficulty_net_driver_loss(d, acc)
    optimizer.zero_grad()
    meta_loss.backward(inputs=[p for p in net.parameters() if p.requires_grad])
    optimizer.step()
    with torch.no_grad():
        return difficulty_net_weights(net(acc))


@register_loss("difficulty_net")
class DifficultyNetLoss(Loss):
    """Cross-entropy weighted by a Difficulty-Net; holds the network and the accuracy buffer.

    Call :meth:`set_accuracy` after each held-out evaluation (zeros at the start, as the
    official CIFAR code), :meth:`meta_step` once per training step before the classifier's
    loss (see :func:`difficulty_net_step`), then ``loss = crit(logits, target)``, which uses
    the current network's weights without gradient. ``accuracy`` and the network's parameters
    are in ``state_dict``. The heuristic, non-learned weighting is :class:`DifficultyWeightedLoss`.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.DifficultyNetLoss(num_classes=3)
        >>> crit.set_accuracy(torch.tensor([0.9, 0.6, 0.2]))
        >>> loss = crit(torch.randn(4, 3), torch.tensor([0, 1, 2, 2]))
    """

    def __init__(self, num_classes: int, hidden: int = 128, bias: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.net = DifficultyNet(num_classes, hidden, bias)
        self.register_buffer("accuracy", torch.zeros(num_classes))

    @torch.no_grad()
    def set_accuracy(self, accuracy) -> None:
        acc = torch.as_tensor(accuracy, dtype=self.accuracy.dtype, device=self.accuracy.device)
        if acc.shape != self.accuracy.shape:
            raise ValueError(f"accuracy must have shape {tuple(self.accuracy.shape)}, got {tuple(acc.shape)}")
        self.accuracy.copy_(acc)

    def class_weights(self) -> Tensor:
        with torch.no_grad():
            return difficulty_net_weights(self.net(self.accuracy))

    def meta_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, inputs: Tensor, targets: Tensor,
                  meta_inputs: Tensor, meta_targets: Tensor, *, lr: float, lam: float = 0.3,
                  meta_grad: bool = False) -> Tensor:
        return difficulty_net_step(model, self.net, optimizer, self.accuracy, inputs, targets, meta_inputs,
                                   meta_targets, lr=lr, lam=lam, meta_grad=meta_grad)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        check_tensor(input, "input")  # before .device: a list gave AttributeError
        return difficulty_net_loss(input, target, self.class_weights().to(input.device), reduction=self.reduction,
                                   sample_weight=sample_weight)
