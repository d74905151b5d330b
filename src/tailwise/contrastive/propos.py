"""ProPos (Huang et al., TPAMI 2022; v1 "NCC"): prototype scattering + positive sampling
alignment for clustering and label-unaware long-tailed representation learning."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._validation import check_floating, check_nonnegative, check_positive, check_tensor
from ..distributed import all_gather_no_grad, all_gather_with_grad
from ..registry import register_loss
from ._common import check_label_range

__all__ = ["propos_loss", "propos_perturb", "prototype_scattering_loss", "cluster_centers", "spherical_kmeans",
           "KMeansResult", "ProPosLoss"]


def propos_perturb(q: Tensor, latent_std: float = 1e-3) -> Tensor:
    r"""PSA's positive sampling: :math:`\tilde z = z + \sigma \epsilon`, :math:`\epsilon \sim N(0, I)`
    (``latent_std`` 1e-3 on CIFAR, 1e-4 on ImageNet). Feed the result to the predictor.

    Example:
        >>> import torch, tailwise
        >>> tailwise.propos_perturb(torch.zeros(2, 3), 0.0)
        tensor([[0., 0., 0.],
                [0., 0., 0.]])
    """
    check_floating(q, "q")
    std = check_nonnegative(latent_std, "latent_std")
    return q + torch.randn_like(q) * std


def cluster_centers(x: Tensor, labels: Tensor, num_clusters: int) -> Tensor:
    r"""Unit-norm cluster means :math:`\mu_k = \mathrm{n}\big(\frac{1}{|C_k|}\sum_{i \in C_k} x_i\big)`;
    an empty cluster gets a zero centre. Differentiable in ``x``."""
    onehot = F.one_hot(labels, num_clusters).to(x.dtype).t()  # (K, N)
    means = onehot @ x / onehot.sum(1, keepdim=True).clamp_min(1.0)
    return F.normalize(means, dim=1)


def prototype_scattering_loss(q_centers: Tensor, k_centers: Tensor, present: Tensor,
                              temperature: float = 0.5) -> Tensor:
    r"""PSL on given centres: for each present cluster ``k``,
    :math:`\mathrm{LSE}_j(s_{kj}) - s_{kk}` with :math:`s_{kk} = \mu_k\cdot\nu_k/\tau` (online vs
    target centre) and :math:`s_{kj} = \mu_k\cdot\mu_j/\tau` (online vs online) for ``j != k``;
    absent clusters' rows are dropped and their columns get logit -10 (as the official code);
    the loss is the mean over present clusters."""
    k = q_centers.shape[0]
    logits = q_centers @ q_centers.t() / temperature
    pos = (q_centers * k_centers).sum(1) / temperature
    eye = torch.eye(k, dtype=torch.bool, device=logits.device)
    logits = torch.where(eye, pos.unsqueeze(1).expand_as(logits), logits)
    logits = torch.where(present.unsqueeze(0), logits, torch.full_like(logits, -10.0))
    per = torch.logsumexp(logits, dim=1) - pos
    per = torch.where(present, per, torch.zeros_like(per))
    return per.sum() / present.sum().clamp_min(1)


@float32_compute
def propos_loss(q: Tensor, p: Tensor, k: Tensor, pseudo_labels: Tensor, num_clusters: int, *,
                temperature: float = 0.5, cluster_weight: float = 0.1, gather_distributed: bool = False) -> Tensor:
    r"""ProPos loss :math:`L = L_{psa} + \lambda L_{psl}` for one view order.

    * PSA (positive sampling alignment): :math:`L_{psa} = \frac{1}{B}\sum_i -2\cos(p_i, \mathrm{sg}(k_i))`,
      with ``p`` the predictor's output on the perturbed online projection
      (:func:`propos_perturb`) and ``k`` the target network's projection of the other view
      (BYOL with a Gaussian perturbation; the ``2 - 2 cos`` form of the v2 path has the same
      gradient).
    * PSL (prototype scattering): online centres :math:`\mu = ` :func:`cluster_centers` of the
      unit-norm online projections ``n(q)`` (with gradient) and target centres :math:`\nu` of the
      keys, both over the whole (all-gathered) batch and grouped by the pseudo-labels, then
      :func:`prototype_scattering_loss` with ``tau = 0.5``.

    Huang et al., "Learning Representation for Clustering via Prototype Scattering and Positive
    Sampling", TPAMI 2022 (arXiv 2111.11821); Hzzone/ProPos ``BYOLWrapper.forward_loss``.
    ``cluster_weight`` is the configs' ``cluster_loss_weight`` (0.1 CIFAR / ImageNet-Dogs, 0.001
    ImageNet). The official model averages this loss over the two view orders (symmetric) and
    switches PSL (and the noise) on after ``warmup_epochs``; do both in the training loop.
    Difference from the code: with ``gather_distributed=True`` the absent-cluster mask comes from
    the all-gathered pseudo-labels (the code uses the local rank's), so 2 ranks equal one process.

    Args:
        q: online projections ``(B, D)`` (before normalisation).
        p: predictor outputs ``(B, D)`` on ``propos_perturb(q)``.
        k: target projections of the other view ``(B, D)`` (no gradient is taken).
        pseudo_labels: cluster assignments ``(B,)`` (e.g. from :func:`spherical_kmeans`).
        num_clusters: ``K``.

    Example:
        >>> import torch, tailwise
        >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss = tailwise.functional.propos_loss(q, q, k, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), 3)
    """
    for name, t in (("q", q), ("p", p), ("k", k)):
        check_floating(t, name, ndim=2)
    if p.shape != q.shape or k.shape != q.shape:
        raise ValueError(f"p and k must have the shape of q {tuple(q.shape)}, got {tuple(p.shape)} and {tuple(k.shape)}")
    check_tensor(pseudo_labels, "pseudo_labels", ndim=1)
    if pseudo_labels.is_floating_point() or pseudo_labels.dtype == torch.bool:
        raise TypeError(f"pseudo_labels must hold integer cluster indices, got dtype {pseudo_labels.dtype}")
    if pseudo_labels.shape[0] != q.shape[0]:
        raise ValueError(f"pseudo_labels must have shape ({q.shape[0]},), got {tuple(pseudo_labels.shape)}")
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 2:
        raise ValueError(f"num_clusters must be an int >= 2, got {num_clusters!r}")
    check_label_range(pseudo_labels, num_clusters, "pseudo_labels")
    tau = check_positive(temperature, "temperature")
    lam = check_nonnegative(cluster_weight, "cluster_weight")
    k = k.detach()
    psa = (-2.0 * F.cosine_similarity(p, k, dim=1)).sum() / max(q.shape[0], 1)
    labels = pseudo_labels.long()
    qn = F.normalize(q, dim=1)
    kn = F.normalize(k, dim=1)
    if gather_distributed:
        qn = all_gather_with_grad(qn)
        kn = all_gather_no_grad(kn)
        labels = all_gather_no_grad(labels)
    present = F.one_hot(labels, num_clusters).sum(0) > 0
    psl = prototype_scattering_loss(cluster_centers(qn, labels, num_clusters),
                                    cluster_centers(kn, labels, num_clusters), present, tau)
    return psa + lam * psl


class KMeansResult(NamedTuple):
    labels: Tensor      # (N,) int64
    centers: Tensor     # (K, D) unit norm
    inertia: Tensor     # sum of cosine distances 1 - cos(x, centre)


def _kmeanspp(x: Tensor, k: int, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=g, device="cpu").item()
    centers = [x[first]]
    dist = (1.0 - x @ x[first]).clamp_min(0)
    for _ in range(1, k):
        w = dist.pow(2)
        probs = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / n)
        nxt = torch.multinomial(probs.cpu(), 1, generator=g).item()
        centers.append(x[nxt])
        dist = torch.minimum(dist, (1.0 - x @ x[nxt]).clamp_min(0))
    return torch.stack(centers)


@torch.no_grad()
def spherical_kmeans(features: Tensor, num_clusters: int, *, n_init: int = 10, max_iter: int = 300,
                     tol: float = 1e-4, seed: int = 0) -> KMeansResult:
    r"""Spherical k-means (cosine distance) with k-means++ seeding; the best of ``n_init`` runs.

    Features are L2-normalised; each point joins the centre of largest cosine similarity; a centre
    is the normalised mean of its members (an emptied cluster keeps its previous centre). A run
    stops when the squared centre shift falls below ``tol`` times the mean per-dimension variance
    of the features, or after ``max_iter`` iterations; the run with the smallest inertia
    :math:`\sum_i (1 - \cos(x_i, c_{y_i}))` wins. Defaults follow Hzzone/torch_clustering's
    ``PyTorchKMeans`` as ProPos uses it (cosine, k-means++, ``n_init=10``, ``max_iter=300``,
    ``tol=1e-4``). Runs on the features' device (a helper for the E-step over a feature bank,
    not a loss: it synchronises to test convergence). Every rank given the same bank and seed
    gets the same result.

    Example:
        >>> import torch, tailwise
        >>> x = torch.cat([torch.randn(20, 4) + 8, torch.randn(20, 4) - 8])
        >>> res = tailwise.spherical_kmeans(x, 2, n_init=2)
        >>> len(set(res.labels[:20].tolist())), len(set(res.labels[20:].tolist()))
        (1, 1)
    """
    check_floating(features, "features", ndim=2)
    n = features.shape[0]
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be an int in [1, {n}] (the number of features), got {num_clusters!r}")
    for name, v in (("n_init", n_init), ("max_iter", max_iter)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    x = F.normalize(features.float(), dim=1)
    threshold = check_nonnegative(tol, "tol") * float(x.var(dim=0).mean())
    g = torch.Generator().manual_seed(int(seed))
    best: Optional[KMeansResult] = None
    for _ in range(n_init):
        centers = _kmeanspp(x, num_clusters, g)
        for _ in range(max_iter):
            labels = (x @ centers.t()).argmax(1)
            onehot = F.one_hot(labels, num_clusters).to(x.dtype)
            sums = onehot.t() @ x
            counts = onehot.sum(0)
            new = torch.where(counts.unsqueeze(1) > 0, F.normalize(sums, dim=1), centers)
            shift = float((new - centers).pow(2).sum())
            centers = new
            if shift <= threshold:
                break
        labels = (x @ centers.t()).argmax(1)
        inertia = (1.0 - (x * centers[labels]).sum(1)).sum()
        if best is None or float(inertia) < float(best.inertia):
            best = KMeansResult(labels, centers, inertia)
    assert best is not None
    return best


@register_loss("propos")
class ProPosLoss(Loss):
    """ProPos loss module; see :func:`tailwise.functional.propos_loss` (no state: the pseudo-labels
    come from :func:`spherical_kmeans` in the training loop's E-step).

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.ProPosLoss(num_clusters=3)
        >>> q, k = torch.randn(6, 8), torch.randn(6, 8)
        >>> loss = crit(q, tailwise.propos_perturb(q), k, torch.tensor([0, 1, 2, 0, 1, 2]))
    """

    def __init__(self, num_clusters: int, temperature: float = 0.5, cluster_weight: float = 0.1,
                 gather_distributed: bool = False, reduction: str = "mean") -> None:
        if reduction != "mean":  # accepted for build_loss(..., reduction=)
            raise ValueError(f"ProPosLoss supports reduction='mean' only, got {reduction!r}")
        super().__init__("mean")
        self.num_clusters = num_clusters
        self.temperature = check_positive(temperature, "temperature")
        self.cluster_weight = check_nonnegative(cluster_weight, "cluster_weight")
        self.gather_distributed = bool(gather_distributed)

    def forward(self, q: Tensor, p: Tensor, k: Tensor, pseudo_labels: Tensor) -> Tensor:
        return propos_loss(q, p, k, pseudo_labels, self.num_clusters, temperature=self.temperature,
                           cluster_weight=self.cluster_weight, gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"num_clusters={self.num_clusters}, temperature={self.temperature}, cluster_weight={self.cluster_weight}"
