"""Context-rich minority oversampling (CMO; Park et al., "The Majority Can Help the Minority:
Context-rich Minority Oversampling for Long-tailed Classification", CVPR 2022).

The official training loop (github naver-ai/cmo, ``cifar_train.py``) pairs every batch of the
ordinary (instance-sampled, majority-rich) loader with a batch from a minority-weighted loader
(:class:`~tailwise.data.MinorityWeightedSampler`, weights ``1 / n_c``) and, with probability
``mixup_prob = 0.5``, CutMixes the minority images into the majority ones:

1. ``lam ~ Beta(1, 1)``;
2. one box for the whole batch: side ratio ``sqrt(1 - lam)``, ``cut_h = int(H * r)``,
   ``cut_w = int(W * r)``, centre uniform over the pixels, corners
   ``clip(centre -/+ cut // 2, 0, size)``;
3. the box of each background image is replaced by the same box of its foreground image;
4. ``lam`` is recomputed as the exact background area ``1 - box_area / (H * W)`` and the loss is
   ``lam * CE(out, y_background) + (1 - lam) * CE(out, y_foreground)``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._validation import check_tensor
from ._checks import as_label_tensor, check_real

__all__ = ["CMOBatch", "cmo_mix", "rand_bbox"]


class CMOBatch(NamedTuple):
    """Result of :func:`cmo_mix`.

    ``images``: the mixed batch; ``target_a``: background labels (weight ``lam``);
    ``target_b``: foreground (minority) labels (weight ``1 - lam``); ``lam``: the exact
    background area fraction (1.0 when no box was pasted); ``box``: ``(y1, x1, y2, x2)`` pixel
    corners of the pasted region (``y`` along dim 2, ``x`` along dim 3).
    """

    images: Tensor
    target_a: Tensor
    target_b: Tensor
    lam: float
    box: Tuple[int, int, int, int]

    def soft_targets(self, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """``lam * one_hot(target_a) + (1 - lam) * one_hot(target_b)``, shape ``(N, num_classes)``."""
        a = torch.nn.functional.one_hot(self.target_a, num_classes).to(dtype)
        b = torch.nn.functional.one_hot(self.target_b, num_classes).to(dtype)
        return self.lam * a + (1.0 - self.lam) * b

    def loss(self, criterion, output: Tensor) -> Tensor:
        """``lam * criterion(output, target_a) + (1 - lam) * criterion(output, target_b)`` (official)."""
        return self.lam * criterion(output, self.target_a) + (1.0 - self.lam) * criterion(output, self.target_b)


def _sample_beta(alpha: float, beta: float, generator: Optional[torch.Generator]) -> float:
    if alpha == 1.0 and beta == 1.0:
        # Beta(1, 1) is uniform; draw it from the torch generator directly.
        return float(torch.rand((), generator=generator, dtype=torch.float64))
    # torch's Beta sampler takes no generator; seed numpy from the torch stream to stay reproducible.
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, beta))


def rand_bbox(height: int, width: int, lam: float,
              generator: Optional[torch.Generator] = None) -> Tuple[int, int, int, int]:
    """CutMix box covering about ``1 - lam`` of an ``height x width`` image, as in the official code.

    Returns ``(y1, x1, y2, x2)``. The centre is uniform over pixels and the box is clipped to the
    image, so the exact area can be smaller than ``(1 - lam) H W``: use the returned corners.
    """
    cut = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y1, y2 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    x1, x2 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    return y1, x1, y2, x2


def cmo_mix(images: Tensor, labels, fg_images: Tensor, fg_labels, *, alpha: float = 1.0,
            prob: float = 1.0, generator: Optional[torch.Generator] = None) -> CMOBatch:
    """Paste minority foregrounds onto majority backgrounds (CMO, Park et al. CVPR 2022).

    Args:
        images: background batch ``(N, C, H, W)`` from the ordinary (instance-sampled) loader.
        labels: its class labels ``(N,)``.
        fg_images: foreground batch from a :class:`~tailwise.data.MinorityWeightedSampler` loader,
            ``(M, C, H, W)`` with ``M >= N`` (only the first ``N`` are used, as the official code
            does for a short last batch).
        fg_labels: its labels ``(M,)``.
        alpha: ``lam ~ Beta(alpha, alpha)``; official 1 (uniform).
        prob: probability of mixing this batch; official training uses 0.5 and only between
            epochs ``start_data_aug`` and ``epochs - end_data_aug``. The default 1.0 always mixes;
            without mixing the images come back unchanged with ``lam = 1``.
        generator: a ``torch.Generator`` for reproducible boxes and ``lam``.

    Returns:
        :class:`CMOBatch` ``(images, target_a, target_b, lam, box)``. Train with
        ``batch.loss(criterion, model(batch.images))`` (the official two-term loss) or with
        ``batch.soft_targets(num_classes)`` for a loss that takes probabilities. The input
        ``images`` are not modified.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> bg, fg = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
        >>> out = cmo_mix(bg, torch.tensor([0, 0]), fg, torch.tensor([5, 7]), generator=g)
        >>> abs(out.images[0].mean().item() - (1 - out.lam)) < 1e-6
        True
    """
    check_tensor(images, "images", ndim=4)
    check_tensor(fg_images, "fg_images", ndim=4)
    labels = as_label_tensor(labels, "labels")
    fg_labels = as_label_tensor(fg_labels, "fg_labels")
    n = images.shape[0]
    if labels.numel() != n:
        raise ValueError(f"labels must have one entry per image ({n}), got {labels.numel()}")
    if fg_labels.numel() != fg_images.shape[0]:
        raise ValueError(f"fg_labels must have one entry per foreground image ({fg_images.shape[0]}), "
                         f"got {fg_labels.numel()}")
    if fg_images.shape[0] < n:
        raise ValueError(f"fg_images must hold at least as many images as images ({n}), got "
                         f"{fg_images.shape[0]}")
    if fg_images.shape[1:] != images.shape[1:]:
        raise ValueError(f"fg_images must have the same (C, H, W) as images {tuple(images.shape[1:])}, "
                         f"got {tuple(fg_images.shape[1:])}")
    alpha = check_real(alpha, "alpha")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    prob = check_real(prob, "prob")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    fg_images, fg_labels = fg_images[:n], fg_labels[:n].to(labels.device)
    # Always consume the same random numbers so a run's later draws do not depend on this coin.
    coin = float(torch.rand((), generator=generator, dtype=torch.float64))
    lam = _sample_beta(alpha, alpha, generator)
    height, width = images.shape[-2], images.shape[-1]
    y1, x1, y2, x2 = rand_bbox(height, width, lam, generator)
    if coin >= prob:
        return CMOBatch(images, labels, fg_labels, 1.0, (0, 0, 0, 0))
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = fg_images[:, :, y1:y2, x1:x2].to(mixed.dtype)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / float(height * width)
    return CMOBatch(mixed, labels, fg_labels, lam, (y1, x1, y2, x2))
