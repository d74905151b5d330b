"""Boosted Contrastive Learning (Zhou et al., ICML 2022): per-pair NT-Xent plus a per-sample
momentum loss that drives how strongly each sample is augmented."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import (assert_values, check_floating, check_positive, check_probability, check_tensor,
                           host_value_checks)
from ..distributed import all_gather_no_grad
from ..registry import register_loss
from .supcon import supcon_loss

__all__ = ["boosted_cl_loss", "momentum_weights", "MomentumLossTracker", "BoostedCLLoss"]


@float32_compute
def boosted_cl_loss(features: Tensor, *, temperature: float = 0.2, normalize: bool = False,
                    gather_distributed: bool = False, reduction: str = "mean",
                    sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Per-pair NT-Xent of Boosted Contrastive Learning.

    For a batch of ``B`` pairs (``features`` ``(B, 2, D)``), anchor ``a`` of pair ``i`` scores its
    partner against the other ``2B - 2`` views,
    :math:`\ell_a = -\log \frac{e^{s_{ap}/\tau}}{e^{s_{ap}/\tau} + \sum_{n} e^{s_{an}/\tau}}`, and
    the pair's loss is the mean of its two anchors, :math:`l_i = (\ell_{i,1} + \ell_{i,2})/2`:
    the quantity BCL tracks per sample. ``"mean"`` is the loss it back-propagates (unweighted).
    ``tau = 0.2`` as in MediaBrain-SJTU/BCL (``losses/nt_xent.py``); the official code
    normalises inside, tailwise requires unit-norm features unless ``normalize=True``.
    Identical to :func:`supcon_loss` with ``labels=None`` and ``base_temperature = temperature``,
    which it calls (so the fused kernels serve it).

    Example:
        >>> import torch, torch.nn.functional as F, tailwise
        >>> z = F.normalize(torch.randn(4, 2, 8), dim=-1)
        >>> per_pair = tailwise.functional.boosted_cl_loss(z, reduction="none")
        >>> per_pair.shape
        torch.Size([4])
    """
    check_floating(features, "features", ndim=3)
    if features.shape[1] != 2:
        raise ValueError(f"features must be (B, 2, D): two views per sample, got shape {tuple(features.shape)}")
    tau = check_positive(temperature, "temperature")
    per_pair = supcon_loss(features, temperature=tau, base_temperature=tau, normalize=normalize,
                           gather_distributed=gather_distributed, reduction="none")
    return reduce_loss(per_pair, reduction, sample_weight)


def momentum_weights(momentum_loss: Tensor) -> Tensor:
    r"""Augmentation strengths :math:`w = u / (2 \max |u|) + 1/2 \in [0, 1]` from the momentum
    losses, :math:`u = (m - \bar m) / \mathrm{std}(m)` over the dataset (unbiased std, as
    ``torch.std`` in the official ``calculate_momentum_weight``): the samples the model
    memorises least (largest momentum loss, typically the tail) get the strongest augmentation.
    Constant losses give 1/2 everywhere instead of NaN.

    Example:
        >>> import torch, tailwise
        >>> tailwise.momentum_weights(torch.tensor([1.0, 2.0, 3.0]))
        tensor([0.0000, 0.5000, 1.0000])
    """
    check_tensor(momentum_loss, "momentum_loss", ndim=1)
    m = momentum_loss.double()
    if m.numel() < 2:
        return torch.full_like(momentum_loss, 0.5, dtype=torch.float32)
    u = (m - m.mean()) / m.std()
    top = u.abs().max()
    w = torch.where(top > 0, u / (2 * top), torch.zeros_like(u)) + 0.5
    w = torch.where(torch.isfinite(w), w, torch.full_like(w, 0.5))
    return w.float()


class MomentumLossTracker(nn.Module):
    r"""Per-dataset-index momentum loss of BCL and the augmentation strengths it implies.

    :meth:`update` records each sample's loss: the raw loss in the first epoch, then
    :math:`m_i \leftarrow (1-\beta)\,l_i + \beta\,m_i` (``beta = 0.97``,
    ``momentum_loss_beta`` in the official code). Under ``torch.distributed`` the (index, loss)
    pairs are all-gathered first, so every rank holds the same state (the official code is
    single-process). :meth:`end_epoch` turns the state into strengths ``w`` (:func:`momentum_weights`,
    over the whole dataset) for the next epoch and advances the epoch counter; ``w`` is 0 before
    the first call, as in the code. Everything is in ``state_dict``.

    The official code z-normalises the current epoch's row of its ``(epochs, N)`` record; it equals
    the running state when every sample is seen once per epoch (a plain shuffled loader).

    Example:
        >>> import torch, tailwise
        >>> tracker = tailwise.MomentumLossTracker(num_samples=4)
        >>> tracker.update(torch.tensor([0, 1, 2, 3]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
        >>> tracker.end_epoch()
        tensor([0.0000, 0.3333, 0.6667, 1.0000])
    """

    def __init__(self, num_samples: int, momentum: float = 0.97) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"num_samples must be a positive int (the dataset size), got {num_samples!r}")
        self.momentum = check_probability(momentum, "momentum")
        self.register_buffer("momentum_loss", torch.zeros(num_samples))
        self.register_buffer("weights", torch.zeros(num_samples))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._first_epoch = True

    def _load_from_state_dict(self, *args, **kwargs):  # keep the python flag in step with the buffer
        super()._load_from_state_dict(*args, **kwargs)
        self._first_epoch = int(self.epoch) == 0

    @torch.no_grad()
    def update(self, indices: Tensor, losses: Tensor) -> None:
        """Record the per-sample ``losses`` ``(B,)`` of dataset ``indices`` ``(B,)``."""
        check_tensor(indices, "indices", ndim=1)
        check_tensor(losses, "losses", ndim=1)
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise TypeError(f"indices must be integer dataset indices, got dtype {indices.dtype}")
        if indices.shape != losses.shape:
            raise ValueError(f"losses must have the shape of indices {tuple(indices.shape)}, got {tuple(losses.shape)}")
        idx = all_gather_no_grad(indices.long()).to(self.momentum_loss.device)
        val = all_gather_no_grad(losses.detach().float()).to(self.momentum_loss)  # buffer's dtype too
        n = self.momentum_loss.numel()
        ok = (idx >= 0) & (idx < n)
        if host_value_checks(idx):
            if idx.numel() and not bool(ok.all()):
                raise ValueError(f"indices must be dataset indices in [0, {n - 1}] (num_samples={n}), got "
                                 f"{idx[~ok][0].item()}")
        elif idx.numel():
            assert_values(ok, f"indices must be dataset indices in [0, {n - 1}]")
        if self._first_epoch:
            self.momentum_loss.index_copy_(0, idx, val)
        else:
            old = self.momentum_loss.index_select(0, idx)
            self.momentum_loss.index_copy_(0, idx, (1.0 - self.momentum) * val + self.momentum * old)

    @torch.no_grad()
    def end_epoch(self) -> Tensor:
        """Compute the strengths for the next epoch (returned and kept in ``weights``)."""
        self.weights.copy_(momentum_weights(self.momentum_loss))
        self.epoch += 1
        self._first_epoch = False
        return self.weights.clone()


@register_loss("boosted_cl")
class BoostedCLLoss(Loss):
    """BCL's contrastive loss with its :class:`MomentumLossTracker`.

    ``forward(features, indices)`` returns the loss (see :func:`tailwise.functional.boosted_cl_loss`)
    and, in training mode, records the per-pair losses in ``tracker``; call
    ``loss_fn.tracker.end_epoch()`` after each epoch and feed ``tracker.weights[i]`` to
    :class:`tailwise.data.BoostedRandAugment` for sample ``i``. Registered as ``boosted_cl``
    (``bcl`` is Balanced Contrastive Learning).

    Example:
        >>> import torch, torch.nn.functional as F, tailwise
        >>> crit = tailwise.BoostedCLLoss(num_samples=100)
        >>> loss = crit(F.normalize(torch.randn(8, 2, 16), dim=-1), torch.arange(8))
    """

    def __init__(self, num_samples: int, temperature: float = 0.2, momentum: float = 0.97, normalize: bool = False,
                 gather_distributed: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")
        self.normalize, self.gather_distributed = bool(normalize), bool(gather_distributed)
        self.tracker = MomentumLossTracker(num_samples, momentum)

    def forward(self, features: Tensor, indices: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        per_pair = boosted_cl_loss(features, temperature=self.temperature, normalize=self.normalize,
                                   gather_distributed=self.gather_distributed, reduction="none")
        if self.training:
            self.tracker.update(indices, per_pair.detach())
        return reduce_loss(per_pair, self.reduction, sample_weight)
