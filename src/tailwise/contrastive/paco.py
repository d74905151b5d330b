"""Parametric contrastive learning (PaCo / GPaCo): learnable class centres in the contrast set."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import (check_class_counts, check_floating, check_nonnegative, check_positive,
                           check_probability)
from ..registry import register_loss
from ._common import (as_views, check_features, check_label_range, class_counts_on, contrastive_rows, flatten_views,
                      gather, host_selection, keeps_feature_dtype)

__all__ = ["paco_loss", "PaCoLoss"]


@keeps_feature_dtype
@float32_compute
def paco_loss(features: Tensor, labels: Tensor, sup_logits: Tensor, *,
              class_counts: Optional[Union[Tensor, Sequence[float]]] = None, alpha: float = 0.05,
              beta: float = 1.0, gamma: float = 1.0, temperature: float = 0.2,
              base_temperature: Optional[float] = None, supt: float = 1.0, smoothing: float = 0.0,
              queue: Optional[Tensor] = None, queue_labels: Optional[Tensor] = None, normalize: bool = False,
              gather_distributed: bool = False, sample_weight: Optional[Tensor] = None, reduction: str = "mean",
              chunk_size: Optional[int] = None, queue_mask: Optional[Tensor] = None) -> Tensor:
    r"""GPaCo loss, Cui et al. ICCV 2021 / TPAMI 2023 (github dvlab-research/Parametric-Contrastive-Learning,
    ``GPaCo/LT/losses.py`` ``PaCoLoss``).

    Every view is an anchor. Its contrast set is the ``C`` class centres (``sup_logits``, i.e. the
    classifier's logits for the anchor, logit-adjusted by :math:`\log\pi_c` from
    ``class_counts`` and divided by ``supt``) plus all other views (and optional ``queue`` keys)
    with similarities :math:`z_i\cdot z_j/\tau`; sample columns are weighted by ``gamma`` in the
    denominator. Positives: the own-class centre with weight ``beta`` (label-smoothed over classes
    with ``smoothing``) and every same-label view/key with weight ``alpha``:

    .. math::
        \ell_i = -\frac{\tau}{\tau_b}\,\frac{\sum_p w_p \log\frac{e^{s_{ip}}}
        {\sum_c e^{s_{ic}} + \gamma\sum_{a\ne i} e^{s_{ia}}}}{\sum_p w_p}

    Defaults are the ImageNet-LT scripts' (alpha 0.05, beta 1, gamma 1, temperature 0.2;
    CIFAR uses alpha 0.01, temperature 0.07). ``base_temperature=None`` means ``temperature``.
    Differences from the official code: no ``+1e-9`` on the prior nor ``+1e-12`` in the log
    (counts are validated positive and the log-sum-exp is exact).

    Args:
        features: L2-normalised ``(N, V, D)`` (``(N, D)``: one view).
        labels: ``(N,)`` class indices in ``[0, C)``.
        sup_logits: centre logits ``(N, V, C)`` (one per view) or ``(N, C)`` shared by the views.
        queue, queue_labels: optional MoCo keys ``(K, D)`` and labels ``(K,)`` (detached).
        queue_mask: optional ``(K,)`` bool, the queue rows to use (the others count nowhere);
            what :meth:`MemoryQueue.masked` returns, so no data-dependent selection is needed.
        gather_distributed: contrast against every rank's views (with gradients).
        reduction: ``"none"`` gives ``(N,)`` (mean over the sample's views).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from tailwise.functional import paco_loss
        >>> z = F.normalize(torch.randn(6, 2, 8), dim=-1)
        >>> loss = paco_loss(z, torch.tensor([0, 1, 2, 0, 1, 2]), torch.randn(6, 3), class_counts=[10, 5, 1])
    """
    t = check_positive(temperature, "temperature")
    tb = t if base_temperature is None else check_positive(base_temperature, "base_temperature")
    a = check_nonnegative(alpha, "alpha")
    b = check_nonnegative(beta, "beta")
    g = check_positive(gamma, "gamma")
    st = check_positive(supt, "supt")
    sm = check_probability(smoothing, "smoothing")
    feats = as_views(check_features(features, normalize=normalize))
    n, v, _ = feats.shape
    check_floating(sup_logits, "sup_logits", ndim=(2, 3))
    num_classes = sup_logits.shape[-1]
    expected = (n, num_classes) if sup_logits.dim() == 2 else (n, v, num_classes)
    if tuple(sup_logits.shape) != expected:
        raise ValueError(f"sup_logits must have shape (N, C) or (N, V, C) = {(n, v, num_classes)}, "
                         f"got {tuple(sup_logits.shape)}")
    check_label_range(labels, num_classes, "labels")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    labels = labels.long()
    sup = sup_logits.unsqueeze(1).expand(n, v, num_classes) if sup_logits.dim() == 2 else sup_logits
    sup = sup.transpose(0, 1).reshape(v * n, num_classes)
    if class_counts is not None:
        counts = class_counts_on(class_counts, num_classes, sup.device)
        sup = sup + torch.log(counts / counts.sum()).to(sup.dtype)
    sup = sup / st

    feats_all, labels_all, offset = gather(feats, labels, gather_distributed)
    n_all = feats_all.shape[0]
    contrast = flatten_views(feats_all)
    c_lab = labels_all.repeat(v)
    anchors = flatten_views(feats)
    a_lab = labels.repeat(v)
    base = torch.arange(n, device=feats.device) + offset
    self_idx = torch.cat([base + k * n_all for k in range(v)])
    col_bias = None
    if queue is not None:
        check_floating(queue, "queue", ndim=2)
        if queue_labels is None or queue_labels.shape != (queue.shape[0],):
            raise ValueError(f"queue_labels must have shape ({queue.shape[0]},) when a queue is given")
        if queue_mask is not None:
            if queue_mask.dtype != torch.bool or tuple(queue_mask.shape) != (queue.shape[0],):
                raise ValueError(f"queue_mask must be a bool tensor of shape ({queue.shape[0]},), got "
                                 f"{tuple(queue_mask.shape)} {queue_mask.dtype}")
            qm = queue_mask.to(contrast.device)
            # unused queue rows: -inf in the denominator and weight 0 as positives
            col_bias = torch.cat([contrast.new_zeros(contrast.shape[0]),
                                  contrast.new_zeros(queue.shape[0]).masked_fill_(~qm, float("-inf"))])
        contrast = torch.cat([contrast, queue.detach().to(contrast.dtype)])
        q_lab = queue_labels.long().to(c_lab.device)
        if queue_mask is not None:
            # an unused row is no positive either: a label no anchor has (labels are >= 0)
            q_lab = torch.where(qm, q_lab, torch.full_like(q_lab, -1))
        c_lab = torch.cat([c_lab, q_lab])

    lse_samples, dot, cnt = contrastive_rows(anchors, contrast, 1.0 / t, col_bias=col_bias, self_idx=self_idx,
                                             a_lab=a_lab, c_lab=c_lab, positives=True,
                                             symmetric=queue is None and n_all == n, chunk_size=chunk_size)
    # the C centre logits join the same row logsumexp
    lse = torch.logaddexp(torch.logsumexp(sup, 1), lse_samples + math.log(g))
    target = torch.full_like(sup, sm / max(num_classes - 1, 1))
    target.scatter_(1, a_lab[:, None], 1.0 - sm)
    pos = b * (target * sup).sum(1) + a * dot / t
    w = b * target.sum(1) + a * cnt
    # the own-class centre is always a positive, so w > 0 unless alpha = beta = 0
    per_anchor = -(t / tb) * (pos / w - lse)
    return reduce_loss(per_anchor.view(v, n).mean(0), reduction, sample_weight)


@register_loss("paco")
class PaCoLoss(Loss):
    """GPaCo loss with learnable class centres (a linear classifier ``centers``/``bias``).

    ``forward(features, labels, center_inputs=None, queue=None, sample_weight=None)``: the centre logits are
    ``center_inputs @ centers.T + bias`` (``center_inputs`` default: ``features``; GPaCo feeds the
    backbone's pooled features here, ``(N, F)`` or ``(N, V, F)``). ``centers`` and ``bias`` are
    parameters (in ``state_dict``); train them with the model. ``queue`` may be a labelled
    :class:`MemoryQueue`. ``seed`` (optional) makes the centres' initialisation (``nn.Linear``'s
    uniform rule) deterministic. See :func:`tailwise.functional.paco_loss`.

    Example:
        >>> import torch, torch.nn.functional as F, tailwise
        >>> crit = tailwise.PaCoLoss(num_classes=3, in_features=8, class_counts=[10, 5, 1])
        >>> z = F.normalize(torch.randn(6, 2, 8), dim=-1)
        >>> loss = crit(z, torch.tensor([0, 1, 2, 0, 1, 2]))
    """

    def __init__(self, num_classes: int, in_features: int, class_counts=None, alpha: float = 0.05,
                 beta: float = 1.0, gamma: float = 1.0, temperature: float = 0.2,
                 base_temperature: Optional[float] = None, supt: float = 1.0, smoothing: float = 0.0,
                 normalize: bool = False, gather_distributed: bool = False, reduction: str = "mean",
                 seed: Optional[int] = None) -> None:
        super().__init__(reduction)
        if seed is None:
            lin = nn.Linear(in_features, num_classes)
            centers, bias = lin.weight.detach().clone(), lin.bias.detach().clone()
        else:  # nn.Linear's default init, U(-1/sqrt(F), 1/sqrt(F)), from a private generator
            g = torch.Generator().manual_seed(seed)
            bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
            centers = (torch.rand(num_classes, in_features, generator=g) * 2 - 1) * bound
            bias = (torch.rand(num_classes, generator=g) * 2 - 1) * bound
        self.centers = nn.Parameter(centers)
        self.bias = nn.Parameter(bias)
        if class_counts is not None:
            self.register_buffer("class_counts", check_class_counts(class_counts, num_classes).float())
        else:
            self.class_counts = None
        self.kw = dict(alpha=alpha, beta=beta, gamma=gamma, temperature=temperature,
                       base_temperature=base_temperature, supt=supt, smoothing=smoothing, normalize=normalize,
                       gather_distributed=gather_distributed)
        paco_loss(torch.nn.functional.normalize(torch.ones(1, 1, 1), dim=-1), torch.zeros(1, dtype=torch.long),
                  torch.zeros(1, 1), **self.kw)  # validates the hyper-parameters once

    def forward(self, features: Tensor, labels: Tensor, center_inputs: Optional[Tensor] = None, queue=None,
                sample_weight: Optional[Tensor] = None) -> Tensor:
        x = features if center_inputs is None else center_inputs
        # validate before the matmul: a wrong width or a list gave a RuntimeError / AttributeError
        check_floating(x, "features" if center_inputs is None else "center_inputs", ndim=(2, 3),
                       last_dim=self.centers.shape[1])
        sup = x @ self.centers.t().to(x.dtype) + self.bias.to(x.dtype)
        qk = ql = qm = None
        if isinstance(queue, Tensor):
            qk = queue
        elif queue is not None:
            if host_selection(features, queue.queue):
                qk, ql = queue.keys, queue.labels
            else:
                qk, ql, qm = queue.masked()
        return paco_loss(features, labels, sup, class_counts=self.class_counts, queue=qk, queue_labels=ql,
                         sample_weight=sample_weight, reduction=self.reduction, queue_mask=qm, **self.kw)
