"""CP2: copy-paste contrastive pre-training for semantic segmentation (Wang et al., ECCV 2022)."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._probabilities import check_probabilities
from .._validation import check_floating, check_nonnegative, check_positive, check_tensor
from ..registry import register_loss
from ._common import host_selection
from .queue import MemoryQueue

__all__ = ["cp2_loss", "cp2_pool", "copy_paste_views", "CopyPasteViews", "CP2Loss"]


def _check_dense(x: Tensor, name: str) -> Tensor:
    check_floating(x, name, ndim=4)
    return x


def _check_mask(mask: Tensor, like: Tensor, name: str) -> Tensor:
    check_tensor(mask, name, ndim=3)
    want = (like.shape[0],) + tuple(like.shape[2:])
    if tuple(mask.shape) != want:
        raise ValueError(f"{name} must have shape {want} (the feature map's batch and spatial size), "
                         f"got {tuple(mask.shape)}")
    # a soft foreground mask is probability-valued: NaN / out-of-range values raise (or assert on
    # device) instead of weighting the pooled embedding (docs/conventions.md)
    return check_probabilities(mask.to(like.dtype), name)


def cp2_pool(dense: Tensor, mask: Tensor) -> Tensor:
    r"""Mask-pooled instance embedding :math:`\mathrm{n}\big(\sum_x m(x)\,\mathrm{n}(f_x)\big)` of
    dense features ``(B, C, h, w)`` with a foreground mask ``(B, h, w)``."""
    f = F.normalize(dense.flatten(2), dim=1)
    return F.normalize(torch.einsum("bcx,bx->bc", f, mask.flatten(1)), dim=1)


@float32_compute
def cp2_loss(q_dense: Tensor, k_dense: Tensor, mask_q: Tensor, mask_k: Tensor, queue: Optional[Tensor] = None, *,
             temperature: float = 0.2, dense_weight: float = 0.2, queue_mask: Optional[Tensor] = None) -> Tensor:
    r"""CP2 loss :math:`L = L_{ins} + 0.2\,L_{dense}` on dense features of two copy-paste views.

    Per pixel features are L2-normalised: :math:`q_x`, :math:`k_y` (keys from the momentum
    encoder; no gradient is taken through ``k_dense``).

    * Instance: :math:`q = \mathrm{n}(\sum_x m_q(x) q_x)`, :math:`k` likewise (:func:`cp2_pool`), and
      MoCo's InfoNCE of ``q`` against its key ``k`` and the ``queue`` ``(K, C)`` of negatives at
      ``T = 0.2``.
    * Dense, per image and without temperature: :math:`s_{xy} = q_x \cdot k_y` and

      .. math::
          L_{dense} = \frac{1}{B}\sum_b \frac{\sum_{x \in F_q,\, y \in F_k} -\log \mathrm{softmax}_x(s_{xy})}{|F_q|\,|F_k|}

      with the softmax over **all query pixels** (background included) for each key pixel: the
      official code's ``LogSoftmax(dim=1)`` axis. :math:`F_q, F_k` are the pasted-foreground
      pixels. tailwise takes the feature map's own size where the code hard-codes 196 (14 x 14
      at 224 px, stride 16); an image whose mask is empty contributes 0 where the code divides by 0.

    Wang et al., "CP2: Copy-Paste Contrastive Pretraining for Semantic Segmentation", ECCV 2022
    (arXiv 2203.11709); wangf3014/CP2 ``builder.py`` (``CP2_MOCO.forward``) and ``main.py``
    (``train``). Without a ``queue`` (or with an empty one) the instance term is 0: InfoNCE
    with the positive alone carries no signal.

    Args:
        q_dense, k_dense: ``(B, C, h, w)`` dense features of the query and key views.
        mask_q, mask_k: ``(B, h, w)`` foreground masks at feature resolution
            (:func:`copy_paste_views` makes them).
        queue: ``(K, C)`` unit-norm negative keys (e.g. ``MemoryQueue.keys``).
        queue_mask: optional ``(K,)`` bool, the queue rows to use (:meth:`MemoryQueue.masked`);
            with none valid the instance term is 0, as without a queue.

    Example:
        >>> import torch, tailwise
        >>> q, k = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
        >>> m = torch.zeros(2, 4, 4); m[:, 1:3, 1:3] = 1
        >>> loss = tailwise.functional.cp2_loss(q, k, m, m)
    """
    _check_dense(q_dense, "q_dense")
    _check_dense(k_dense, "k_dense")
    if k_dense.shape != q_dense.shape:
        raise ValueError(f"k_dense must have the shape of q_dense {tuple(q_dense.shape)}, got {tuple(k_dense.shape)}")
    mq = _check_mask(mask_q, q_dense, "mask_q")
    mk = _check_mask(mask_k, q_dense, "mask_k")
    t = check_positive(temperature, "temperature")
    lam = check_nonnegative(dense_weight, "dense_weight")
    k_dense = k_dense.detach()
    q_ins, k_ins = cp2_pool(q_dense, mq), cp2_pool(k_dense, mk)
    if queue is None or queue.shape[0] == 0:
        # InfoNCE with the positive alone is log 1 = 0: no instance signal without negatives
        ins = (q_ins * 0).sum()
    else:
        check_floating(queue, "queue", ndim=2)
        if queue.shape[1] != q_ins.shape[1]:
            raise ValueError(f"queue must have shape (K, {q_ins.shape[1]}), got {tuple(queue.shape)}")
        # MoCo's logits [q.k, q.queue] / T with the positive at index 0 (an empty mask pools to a
        # zero vector, whose logits are all 0: finite, where the official code gives NaN)
        pos = (q_ins * k_ins).sum(1, keepdim=True)
        neg = q_ins @ queue.detach().to(q_ins.dtype).t()
        if queue_mask is not None:
            if queue_mask.dtype != torch.bool or tuple(queue_mask.shape) != (queue.shape[0],):
                raise ValueError(f"queue_mask must be a bool tensor of shape ({queue.shape[0]},), got "
                                 f"{tuple(queue_mask.shape)} {queue_mask.dtype}")
            neg = neg.masked_fill(~queue_mask.to(neg.device), float("-inf"))
        logits = torch.cat([pos, neg], 1) / t
        ins = (torch.logsumexp(logits, 1) - logits[:, 0]).sum() / max(q_ins.shape[0], 1)
    q = F.normalize(q_dense.flatten(2), dim=1)
    k = F.normalize(k_dense.flatten(2), dim=1)
    logp = torch.log_softmax(torch.einsum("bcx,bcy->bxy", q, k), dim=1)  # softmax over query pixels x
    mq, mk = mq.flatten(1), mk.flatten(1)
    num = -torch.einsum("bxy,bx,by->b", logp, mq, mk)
    den = mq.sum(1) * mk.sum(1)
    dense = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num)).mean() \
        if q.shape[0] else num.sum()
    return ins + lam * dense


class CopyPasteViews(NamedTuple):
    view_q: Tensor   # (B, C, H, W)
    view_k: Tensor
    mask_q: Tensor   # (B, H/stride, W/stride) at the feature stride's centres
    mask_k: Tensor


def _paste_box(b: int, h: int, w: int, area: Tuple[float, float], ratio: Tuple[float, float],
               g: torch.Generator, device) -> Tensor:
    """(B, H, W) masks of one random box each, area fraction in ``area`` and aspect in ``ratio``
    (RandomErasing's sampling: log-uniform ratio, retried until the box fits)."""
    masks = torch.zeros(b, h, w, device=device)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for i in range(b):
        for _ in range(10):
            a = h * w * (area[0] + (area[1] - area[0]) * torch.rand(1, generator=g).item())
            r = math.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand(1, generator=g).item())
            bh, bw = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if 0 < bh <= h and 0 < bw <= w:
                break
        else:
            bh, bw = h, w
        y0 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
        x0 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
        masks[i, y0:y0 + bh, x0:x0 + bw] = 1.0
    return masks


def copy_paste_views(fg_q: Tensor, fg_k: Tensor, bg_q: Tensor, bg_k: Tensor, *, stride: int = 16,
                     area: Tuple[float, float] = (0.5, 0.8), ratio: Tuple[float, float] = (0.8, 1.25),
                     generator: Optional[torch.Generator] = None) -> CopyPasteViews:
    r"""Compose CP2's two views: each foreground crop pasted into a random box of its own
    background, ``view = fg * m + bg * (1 - m)``, with the masks sampled at the feature stride's
    pixel centres (offset ``stride // 2``) for :func:`cp2_loss`.

    The box follows the official pipeline's RandomErasing on the background (area 0.5-0.8 of the
    image, aspect 0.8-1.25). ``fg_q``/``fg_k`` are two augmentations of the same image,
    ``bg_q``/``bg_k`` two background crops, all ``(B, C, H, W)``.

    Example:
        >>> import torch, tailwise
        >>> fg, bg = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
        >>> v = tailwise.copy_paste_views(fg, fg, bg, bg.flip(0), stride=16)
        >>> v.view_q.shape, v.mask_q.shape
        (torch.Size([2, 3, 64, 64]), torch.Size([2, 4, 4]))
    """
    for name, t in (("fg_q", fg_q), ("fg_k", fg_k), ("bg_q", bg_q), ("bg_k", bg_k)):
        check_floating(t, name, ndim=4)
        if t.shape != fg_q.shape:
            raise ValueError(f"{name} must have the shape of fg_q {tuple(fg_q.shape)}, got {tuple(t.shape)}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if not (0 < area[0] <= area[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"area must be 0 < lo <= hi <= 1 and ratio 0 < lo <= hi, got {area} and {ratio}")
    g = generator or torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,))))
    b, _, h, w = fg_q.shape
    mq = _paste_box(b, h, w, area, ratio, g, fg_q.device)
    mk = _paste_box(b, h, w, area, ratio, g, fg_q.device)
    vq = fg_q * mq.unsqueeze(1) + bg_q * (1 - mq.unsqueeze(1))
    vk = fg_k * mk.unsqueeze(1) + bg_k * (1 - mk.unsqueeze(1))
    s0 = stride // 2
    return CopyPasteViews(vq, vk, mq[:, s0::stride, s0::stride], mk[:, s0::stride, s0::stride])


@register_loss("cp2")
class CP2Loss(Loss):
    """CP2 loss with its MoCo queue (:class:`MemoryQueue`, 65536 keys of dim 128 by default).

    ``forward(q_dense, k_dense, mask_q, mask_k)`` computes :func:`tailwise.functional.cp2_loss`
    against the current queue, then (in training mode) enqueues the pooled keys, all-gathered
    across ranks, as the official ``_dequeue_and_enqueue`` does after the logits. The official
    queue starts as random unit vectors; this one starts empty and fills (the first batches
    see fewer negatives).

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.CP2Loss(queue_size=32, dim=8)
        >>> m = torch.ones(2, 4, 4)
        >>> loss = crit(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4), m, m)
        >>> len(crit.queue)
        2
    """

    def __init__(self, queue_size: int = 65536, dim: int = 128, temperature: float = 0.2,
                 dense_weight: float = 0.2, reduction: str = "mean") -> None:
        if reduction != "mean":  # accepted for build_loss(..., reduction=)
            raise ValueError(f"CP2Loss supports reduction='mean' only, got {reduction!r}")
        super().__init__("mean")
        self.queue = MemoryQueue(queue_size, dim)
        self.temperature = check_positive(temperature, "temperature")
        self.dense_weight = check_nonnegative(dense_weight, "dense_weight")

    def forward(self, q_dense: Tensor, k_dense: Tensor, mask_q: Tensor, mask_k: Tensor) -> Tensor:
        if host_selection(q_dense, self.queue.queue):
            keys, valid = (self.queue.keys if len(self.queue) else None), None
        else:  # the whole queue with its fill mask: no host read of how full it is
            keys, _, valid = self.queue.masked()
        loss = cp2_loss(q_dense, k_dense, mask_q, mask_k, keys, temperature=self.temperature,
                        dense_weight=self.dense_weight, queue_mask=valid)
        if self.training:
            with torch.no_grad():
                self.queue.enqueue(cp2_pool(k_dense.detach().float(), mask_k.float()))
        return loss
