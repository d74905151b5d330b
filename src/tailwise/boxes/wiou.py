"""Wise-IoU v1/v2/v3 (Tong et al., arXiv 2301.10051): distance attention and a dynamic,
outlier-aware focusing driven by the running mean of the IoU loss."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_choice, check_positive, check_probability, check_reduction, check_tensor
from ..distributed import all_reduce_sum
from ..registry import register_loss
from ._geometry import DEFAULT_EPS, _check_format, check_pair, columns, pair_terms
from ._module import check_eps

__all__ = ["wiou_loss", "wiou_momentum", "WIoULoss", "WIOU_PRESETS"]

VERSIONS = ("v1", "v2", "v3")
BASES = ("wiou", "iou", "giou", "diou", "ciou", "eiou")
# (alpha, delta, momentum): the v1 branch used for the paper's experiments (momentum from
# n t = 890 x 34 batches), and the master branch's IouLoss
WIOU_PRESETS = {
    "paper": (1.9, 3.0, 1.0 - 0.05 ** (1.0 / (890 * 34))),
    "master": (1.7, 2.7, 0.01),
}


def wiou_momentum(batches_per_epoch: int, epochs: int) -> float:
    r"""The paper's running-mean momentum :math:`m = 1 - 0.05^{1/(n t)}`: after ``n t`` updates
    the initial value keeps a weight of 5%.

    Example:
        >>> round(wiou_momentum(890, 34), 8)
        9.899e-05
    """
    for name, v in (("batches_per_epoch", batches_per_epoch), ("epochs", epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return 1.0 - 0.05 ** (1.0 / (batches_per_epoch * epochs))


def _base_and_iou_loss(p: Tensor, t: Tensor, base: str, eps: float):
    """(the base loss, 1 - IoU) per box, both ``(...,)``."""
    a1, b1, a2, b2 = columns(p)
    A1, B1, A2, B2 = columns(t)
    g = pair_terms(a1, b1, a2, b2, A1, B1, A2, B2, eps)
    l_iou = 1.0 - g.iou
    if base == "wiou":
        # distance attention R = exp(rho^2 / sg(c^2)): the enclosing box gets no gradient
        return torch.exp(g.rho2 / g.c2.detach()) * l_iou, l_iou
    if base == "iou":
        return l_iou, l_iou
    from . import functional as BF  # the family's own losses, so every base keeps its conventions
    fn = {"giou": BF.giou_loss, "diou": BF.diou_loss, "ciou": BF.ciou_loss, "eiou": BF.eiou_loss}[base]
    return fn(p, t, eps=eps, reduction="none", validate=False), l_iou


def _focus(loss: Tensor, l_iou: Tensor, iou_mean: Tensor, version: str, alpha: float, delta: float) -> Tensor:
    if version == "v1":
        return loss
    # a float mean stays a Python number: a tensor made from it would be copied to the device per call
    beta = l_iou.detach() / (iou_mean.to(device=l_iou.device, dtype=l_iou.dtype) if isinstance(iou_mean, Tensor)
                             else iou_mean)
    if version == "v2":
        # monotonic focusing (L_IoU* / mean)^gamma with the code's gamma = 0.5
        return loss * beta.sqrt()
    # non-monotonic: r = beta / (delta alpha^(beta - delta)), r = 1 at beta = delta
    return loss * (beta / (delta * torch.pow(alpha, beta - delta)))


@float32_compute
def wiou_loss(input: Tensor, target: Tensor, *, version: str = "v3", iou_mean: Optional[Tensor] = None,
              base: str = "wiou", alpha: float = 1.9, delta: float = 3.0, box_format: str = "xyxy",
              eps: float = DEFAULT_EPS, reduction: str = "mean", sample_weight: Optional[Tensor] = None,
              validate: bool = True) -> Tensor:
    r"""Wise-IoU loss between aligned boxes.

    With :math:`\mathcal{L}_{IoU} = 1 - \mathrm{IoU}`, :math:`\rho` the centre distance and
    :math:`W_g, H_g` the enclosing box size:

    * v1: :math:`\mathcal{L} = \exp\!\big(\rho^2 / \mathrm{sg}(W_g^2 + H_g^2)\big)\,\mathcal{L}_{IoU}`;
    * v2: :math:`\mathcal{L}_{v1}\,(\mathrm{sg}(\mathcal{L}_{IoU}) / \bar{\mathcal{L}})^{1/2}`;
    * v3: :math:`r\,\mathcal{L}_{v1}`, :math:`\beta = \mathrm{sg}(\mathcal{L}_{IoU})/\bar{\mathcal{L}}`,
      :math:`r = \beta / (\delta\,\alpha^{\beta - \delta})`.

    :math:`\bar{\mathcal{L}}` is the running mean of :math:`\mathcal{L}_{IoU}` (``iou_mean``,
    required for v2/v3); :class:`WIoULoss` keeps and updates it. ``base`` swaps the v1 distance
    attention for another loss of the family (``"iou"``, ``"giou"``, ``"diou"``, ``"ciou"``,
    ``"eiou"``), which the focusing then multiplies, as the official ``IouLoss`` does; the
    focusing always uses :math:`\mathcal{L}_{IoU}`. The bases are tailwise's own losses: its
    ``eiou`` is the EIoU paper's (width and height differences), whereas the WIoU repository's
    ``_EIoU`` penalises the per-axis centre offsets instead.

    Tong et al., "Wise-IoU: Bounding Box Regression Loss with Dynamic Focusing Mechanism",
    arXiv 2301.10051; defaults ``alpha=1.9, delta=3`` from the v1 branch of Instinct323/wiou
    (used for the paper's experiments); the master branch uses ``alpha=1.7, delta=2.7``
    (:data:`WIOU_PRESETS`). tailwise adds ``eps`` to the union and to
    :math:`W_g^2 + H_g^2` (the family's convention) so degenerate boxes give no NaN.

    Example:
        >>> import torch
        >>> p, t = torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]])
        >>> round(float(wiou_loss(p, t, version="v1")), 4)  # exp(rho^2 / c^2) (1 - IoU) = exp(1/13) 2/3
        0.72
    """
    check_choice(version, "version", VERSIONS)
    check_choice(base, "base", BASES)
    check_reduction(reduction)
    _check_format(box_format)
    eps = check_eps(eps)
    alpha, delta = check_positive(alpha, "alpha"), check_positive(delta, "delta")
    if version != "v1":
        if iou_mean is None:
            raise ValueError(f"iou_mean (the running mean of 1 - IoU) is required for version={version!r}; "
                             f"use tailwise.WIoULoss to keep it")
        if not isinstance(iou_mean, Tensor):
            iou_mean = float(iou_mean)
    p, t = check_pair(input, target, box_format, validate)
    loss, l_iou = _base_and_iou_loss(p, t, base, eps)
    if version != "v1":
        loss = _focus(loss, l_iou, iou_mean, version, alpha, delta)
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("wiou")
class WIoULoss(Loss):
    """Wise-IoU with its running mean as a buffer; see :func:`tailwise.functional.wiou_loss`.

    ``preset="paper"`` (default; alpha 1.9, delta 3, momentum :math:`1 - 0.05^{1/(890 \\cdot 34)}`)
    or ``"master"`` (alpha 1.7, delta 2.7, momentum 0.01); explicit ``alpha``/``delta``/``momentum``
    override the preset (:func:`wiou_momentum` computes the paper's momentum for your schedule).
    In training mode each forward first updates
    :math:`\\bar L \\leftarrow (1-m)\\bar L + m\\,\\overline{\\mathrm{sg}(L_{IoU})}` with the batch
    mean (over all ranks when ``torch.distributed`` is initialised; the official code uses the
    per-process mean), then scales the loss with the updated value, as the official code does.
    ``iou_mean`` starts at 1 and is in ``state_dict``.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.WIoULoss(version="v3")
        >>> loss = crit(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]]))
    """

    def __init__(self, version: str = "v3", base: str = "wiou", preset: str = "paper", alpha: Optional[float] = None,
                 delta: Optional[float] = None, momentum: Optional[float] = None, box_format: str = "xyxy",
                 eps: float = DEFAULT_EPS, reduction: str = "mean", validate: bool = True) -> None:
        super().__init__(reduction)
        check_choice(version, "version", VERSIONS)
        check_choice(base, "base", BASES)
        check_choice(preset, "preset", tuple(WIOU_PRESETS))
        pa, pd, pm = WIOU_PRESETS[preset]
        self.version, self.base, self.preset = version, base, preset
        self.alpha = check_positive(pa if alpha is None else alpha, "alpha")
        self.delta = check_positive(pd if delta is None else delta, "delta")
        self.momentum = check_probability(pm if momentum is None else momentum, "momentum")
        self.box_format = _check_format(box_format)
        self.eps = check_eps(eps)
        self.validate = bool(validate)
        self.register_buffer("iou_mean", torch.tensor(1.0))

    @torch.no_grad()
    def _update(self, input: Tensor, target: Tensor) -> None:
        p, t = check_pair(input, target, self.box_format, False)
        l_iou = _base_and_iou_loss(p.float(), t.float(), "iou", self.eps)[1].reshape(-1)
        stats = all_reduce_sum(torch.stack([l_iou.sum(), l_iou.new_full((), float(l_iou.numel()))]))
        mean = stats[0] / stats[1].clamp_min(1)
        # an empty batch (on every rank) leaves the mean as it is, without a host branch
        new = (1 - self.momentum) * self.iou_mean + self.momentum * mean.to(self.iou_mean.dtype)
        self.iou_mean.copy_(torch.where(stats[1] > 0, new, self.iou_mean))

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        check_tensor(input, "input")  # before .device and the running mean: a list gave AttributeError
        check_tensor(target, "target")
        if self.iou_mean.device != input.device:
            self.iou_mean = self.iou_mean.to(input.device)
        if self.training and self.version != "v1":
            self._update(input.detach(), target.detach())
        return wiou_loss(input, target, version=self.version, iou_mean=self.iou_mean, base=self.base,
                         alpha=self.alpha, delta=self.delta, box_format=self.box_format, eps=self.eps,
                         reduction=self.reduction, sample_weight=sample_weight, validate=self.validate)

    def extra_repr(self) -> str:
        return (f"version={self.version!r}, base={self.base!r}, alpha={self.alpha}, delta={self.delta}, "
                f"momentum={self.momentum:.3g}, {super().extra_repr()}")
