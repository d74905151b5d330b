"""Normalised one-way partial AUC over a false-positive-rate band ``[alpha, beta]``."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._precision import float32_compute
from .._validation import check_choice, check_nonnegative, check_positive, check_probability
from ..registry import register_loss
from ..contrastive._common import host_selection
from ..kernels import dispatch
from ..kernels import soft_rank as _soft_rank  # noqa: F401 - registers the "soft_rank" op
from ._common import check_queue, gather, per_class_mean, pool, prepare, reduce_classes, warn_once
from ._module import QueuedRankingLoss

__all__ = ["pauc_at_budget_loss", "PAUCAtBudgetLoss"]

_SURROGATES = ("sigmoid", "squared_hinge")


def _band(s: Tensor, neg: Tensor, alpha: float, beta: float, width: Optional[int] = None):
    """Band negatives per class: row indices ``(B, C)`` and weights ``(B, C)`` (0 = padding).

    Negatives of a class are ranked by descending score (detached, stable); the one at rank
    ``r`` (0-based) owns the FPR interval ``[r/n, (r+1)/n]`` of the empirical ROC, and its
    weight is that interval's overlap with ``[alpha, beta]`` divided by ``beta - alpha``
    (weights sum to 1, boundary negatives get fractional weight, so the band is exact for any n).
    ``neg (M, C)`` marks the negatives. ``width=None`` sizes the band from the data (a host
    read); a fixed ``width`` (at least the widest band) pads with zero weights instead.
    """
    m, c = s.shape
    nneg = neg.sum(0)
    n = nneg.to(torch.float64)
    key = s.detach().masked_fill(~neg, float("-inf"))
    order = torch.sort(key, dim=0, descending=True, stable=True).indices
    start = torch.floor(alpha * n).long().clamp(max=m)
    stop = torch.ceil(beta * n).long()
    if width is None:
        width = int((stop - start).clamp_min(0).max()) if c else 0
    r = start.unsqueeze(0) + torch.arange(width, device=s.device).unsqueeze(1)   # (B, C)
    nn_ = n.clamp_min(1).unsqueeze(0)
    lo = torch.maximum(r / nn_, torch.full_like(nn_, alpha))
    hi = torch.minimum((r + 1) / nn_, torch.full_like(nn_, beta))
    omega = ((hi - lo).clamp_min(0) / (beta - alpha)) * (r < nneg.unsqueeze(0))
    idx = order.gather(0, r.clamp(max=max(m - 1, 0)))
    return idx, omega.to(s.dtype)


def _band_width(m: int, alpha: float, beta: float) -> int:
    """Static bound on ``ceil(beta n) - floor(alpha n)`` over ``n <= m`` negatives."""
    return min(m, math.ceil((beta - alpha) * m) + 2)


def _pauc_masked(s, p, w, v, alpha, beta, temperature, surrogate, margin):
    m, c = s.shape
    pf = p & v.unsqueeze(1)
    neg = v.unsqueeze(1) & ~pf
    valid = (pf.sum(0) > 0) & (neg.sum(0) > 0)
    idx, omega = _band(s, neg, alpha, beta, _band_width(m, alpha, beta))
    negs = s.gather(0, idx)                                      # (B, C), carries gradient
    if surrogate == "sigmoid":
        # sum_b omega_b sigmoid((s_i - n_b) / tau) is a weighted soft rank of -s_i among -n_b:
        # the chunked op keeps memory at one block instead of (M, B, C) saved for backward
        r = dispatch("soft_rank", -negs.t(), -s.t(), temperature, omega.t().unsqueeze(2))
        per_row = (r[..., 0] - 0.5).t()
    else:
        d = s.unsqueeze(1) - negs.unsqueeze(0)                   # (M, B, C): every row against the band
        per_row = ((margin - d).clamp_min(0).square() * omega).sum(1)
    wk = pf.to(s.dtype) * w.unsqueeze(1)
    value = (per_row * wk).sum(0) / wk.sum(0).clamp_min(torch.finfo(s.dtype).tiny)
    return (1.0 - value if surrogate == "sigmoid" else value), valid


def _pauc(s, p, w, alpha, beta, temperature, surrogate, margin, owner, v=None):
    if v is not None:
        # masked form: no host reads, so no skip warning either (skipped classes are still 0)
        return _pauc_masked(s, p, w, v, alpha, beta, temperature, surrogate, margin)
    m, c = s.shape
    npos = p.sum(0)
    nneg = m - npos
    valid = (npos > 0) & (nneg > 0)
    if not bool(valid.all()):
        bad = [i for i in range(c) if not bool(valid[i])]
        warn_once("skip", f"pauc_at_budget: class(es) {bad[:8]} skipped (no positive or no negative in the "
                          "pool); further skips are silent. A queue (queue_size) avoids this at low positive "
                          "rates.", owner)
    rows, cols = p.nonzero(as_tuple=True)
    if rows.numel() == 0 or m == 0 or not bool(valid.any()):
        return s.new_zeros(c), valid
    idx, omega = _band(s, ~p, alpha, beta)
    negs = s.gather(0, idx)                                      # (B, C), carries gradient
    d = s[rows, cols].unsqueeze(1) - negs.t()[cols]               # (P, B): s_pos - s_band_neg
    om = omega.t()[cols]
    if surrogate == "sigmoid":
        per_pos = (torch.sigmoid(d / temperature) * om).sum(1)   # soft TPR integrated over the band
        value, _ = per_class_mean(per_pos, cols, w[rows], c)
        return 1.0 - value, valid
    per_pos = ((margin - d).clamp_min(0).square() * om).sum(1)
    value, _ = per_class_mean(per_pos, cols, w[rows], c)
    return value, valid


def _check(alpha, beta, temperature, surrogate, margin):
    alpha = check_probability(alpha, "alpha")
    beta = check_probability(beta, "beta")
    if not alpha < beta:
        raise ValueError(f"the FPR band needs 0 <= alpha < beta <= 1, got alpha={alpha}, beta={beta}")
    check_choice(surrogate, "surrogate", _SURROGATES)
    return alpha, beta, check_positive(temperature, "temperature"), check_nonnegative(margin, "margin")


@float32_compute
def pauc_at_budget_loss(input: Tensor, target: Tensor, *, alpha: float = 0.0, beta: float = 0.01,
                        temperature: float = 0.1, surrogate: str = "sigmoid", margin: float = 1.0,
                        ignore_index: int = -100, sample_weight: Optional[Tensor] = None,
                        queue_scores: Optional[Tensor] = None, queue_labels: Optional[Tensor] = None,
                        queue_weight: Optional[Tensor] = None, gather_distributed: bool = False,
                        reduction: str = "mean", return_valid: bool = False):
    r"""Surrogate of ``1 -`` the normalised one-way partial AUC over the FPR band ``[alpha, beta]``.

    Per class column, rank the pooled negatives by descending score (no gradient through the
    ranking); negative ``j`` at rank ``r_j`` covers FPR ``[r_j/n^-, (r_j+1)/n^-]`` and gets weight
    ``omega_j`` = overlap with ``[alpha, beta]`` / ``(beta - alpha)`` (so ``sum omega = 1``).
    The exact normalised pAUC is ``(1/|P|) sum_{i in P} sum_j omega_j 1[s_i > s_j]``
    (Narasimhan & Agarwal, KDD 2013; Zhu et al., "When AUC meets DRO", ICML 2022, one-way pAUC).

    * ``surrogate="sigmoid"`` (default): ``1[s_i > s_j] -> sigma((s_i - s_j)/tau)``, loss =
      ``1 - pAUC~``; tends to ``1 - pAUC`` as ``tau -> 0``.
    * ``surrogate="squared_hinge"``: ``sum_j omega_j (margin - (s_i - s_j))_+^2`` averaged over
      positives (Zhu et al.'s surrogate, margin 1.0 as LibAUC); an upper bound shape, not ``1 - pAUC``.

    Both positives and the band negatives receive gradient. ``alpha = 0, beta = budget`` puts
    every negative that would be alerted at that FPR budget in the band. Classes with no
    positive or no negative in the pool are skipped with a warning shown once (per module
    instance, or once per process for the functional form). Constant scores are *not*
    degenerate here: the band is still well defined (stable order) and the surrogate gives
    positives a push up, so they are kept. The loss is never NaN: if every class is skipped it
    is 0 with a zero gradient.

    Args:
        alpha, beta: FPR band, ``0 <= alpha < beta <= 1``.
        temperature: sigmoid temperature (score units; 0.1 suits logits).
        surrogate: ``"sigmoid"`` or ``"squared_hinge"``; margin: hinge margin.
        other arguments: as :func:`tailwise.functional.smooth_ap_loss`.

    Example:
        >>> import torch, tailwise.functional as TF
        >>> s = torch.tensor([2.0, 0.5, 1.0, 0.0, -1.0, -2.0])
        >>> y = torch.tensor([1, 1, 0, 0, 0, 0])
        >>> # band [0, 0.5] = top 2 negatives (1.0, 0.0); positive 0.5 beats only one of them
        >>> round(TF.pauc_at_budget_loss(s, y, beta=0.5, temperature=1e-3).item(), 4)
        0.25
    """
    alpha, beta, temperature, margin = _check(alpha, beta, temperature, surrogate, margin)
    scores, pos, keep, w = prepare(input, target, ignore_index, sample_weight)
    extra = check_queue(queue_scores, queue_labels, queue_weight, scores.shape[1], scores.dtype, scores.device)
    scores, pos, keep, w = gather(scores, pos, keep, w, gather_distributed)
    s, p, ww, v = pool(scores, pos, keep, w, extra, masked=not host_selection(scores))
    loss_c, valid = _pauc(s, p, ww, alpha, beta, temperature, surrogate, margin, None, v)
    out = reduce_classes(loss_c, valid, reduction, input)
    return (out, valid) if return_valid else out


@register_loss("pauc_at_budget")
class PAUCAtBudgetLoss(QueuedRankingLoss):
    r"""Partial AUC over an FPR band (see :func:`tailwise.functional.pauc_at_budget_loss`), optional queue.

    The band's negatives come from the pool, so at small ``beta`` a queue matters: the band holds
    about ``(beta - alpha) * n^-`` negatives (at least one, with fractional weights).

    Example:
        >>> import torch, tailwise
        >>> loss_fn = tailwise.PAUCAtBudgetLoss(beta=0.05, num_classes=1, queue_size=512)
        >>> loss = loss_fn(torch.randn(128, requires_grad=True), (torch.rand(128) < 0.05).long())
    """

    def __init__(self, alpha: float = 0.0, beta: float = 0.01, temperature: float = 0.1, *,
                 surrogate: str = "sigmoid", margin: float = 1.0, num_classes: Optional[int] = None,
                 queue_size: int = 0, ignore_index: int = -100, gather_distributed: Optional[bool] = None,
                 update_queue_in_eval: bool = False, reduction: str = "mean") -> None:
        super().__init__(num_classes=num_classes, queue_size=queue_size, ignore_index=ignore_index,
                         gather_distributed=gather_distributed, update_queue_in_eval=update_queue_in_eval,
                         reduction=reduction)
        self.alpha, self.beta, self.temperature, self.margin = _check(alpha, beta, temperature, surrogate, margin)
        self.surrogate = surrogate

    def _compute(self, s, p, w, v=None):
        return _pauc(s, p, w, self.alpha, self.beta, self.temperature, self.surrogate, self.margin, self, v)
