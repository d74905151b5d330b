"""GPU benchmark cases of the contrastive family for ``benchmarks/gpu.py``.

SupCon (V=2, D=128, 100 classes) at N=4096 and 16384 in float32 and bfloat16, and N=65536 (where
the dense formulations run out of memory), forward+backward, against:

* the SupContrast algorithm (github HobbitLong/SupContrast ``losses.py``), re-typed below from its
  description: the dense ``(VN, VN)`` similarity, float label and self masks, a max-shift, then
  separate ``exp`` / ``log`` / masked-mean passes, all kept by autograd;
* pytorch-metric-learning ``SupConLoss`` (needs ``pytorch_metric_learning``);
* tailwise's torch path (``TAILWISE_KERNELS=torch``: the row-chunked recompute) and its Triton
  kernel (``TAILWISE_KERNELS=triton``).

Plus NT-Xent (``labels=None``) at N=16384 and MoCo InfoNCE with a 65536-key queue.

float32 cases run with PyTorch's default float32 matmul precision ("highest": no TF32, for the
peers' cuBLAS GEMMs and the kernel's ``tl.dot`` alike); the rows named "tf32" set
``torch.backends.cuda.matmul.fp32_precision = "tf32"`` for every implementation of that case.

    python benchmarks/gpu.py --only contrastive
"""

from __future__ import annotations

import os
from typing import List

import torch
import torch.nn.functional as F

from gpu import Case, Impl

TEMPERATURE = 0.07
CLASSES = 100


def supcontrast_dense(features: torch.Tensor, labels: torch.Tensor, temperature: float = TEMPERATURE,
                      base_temperature: float = TEMPERATURE) -> torch.Tensor:
    """The SupContrast algorithm, dense: every (VN x VN) intermediate is materialised and kept by autograd."""
    n, v, _ = features.shape
    z = torch.cat(torch.unbind(features, dim=1), dim=0)                 # (VN, D), view-major
    logits = torch.matmul(z, z.T) / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()    # numerical shift
    positives = (labels[:, None] == labels[None, :]).float().repeat(v, v)
    not_self = torch.ones_like(positives)
    not_self.fill_diagonal_(0.0)
    positives = positives * not_self
    denom = (torch.exp(logits) * not_self).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(denom)
    n_pos = positives.sum(dim=1)
    n_pos = torch.where(n_pos < 1e-6, torch.ones_like(n_pos), n_pos)
    mean_log_prob_pos = (positives * log_prob).sum(dim=1) / n_pos
    return (-(temperature / base_temperature) * mean_log_prob_pos).view(v, n).mean()


def moco_dense(features: torch.Tensor, queue: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """MoCo's InfoNCE as its reference code writes it: [q.k | q.queue] logits and cross-entropy on class 0."""
    q, k = features[:, 0], features[:, 1]
    logits = torch.cat([(q * k).sum(-1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def _pml_supcon(inputs):
    from pytorch_metric_learning.losses import SupConLoss
    feats, labels = inputs["features"], inputs["labels"]
    v = feats.shape[1]
    emb = torch.cat(torch.unbind(feats, dim=1), dim=0)
    return SupConLoss(temperature=TEMPERATURE)(emb, labels.repeat(v))


def _tailwise_supcon(inputs):
    from tailwise.functional import supcon_loss
    return supcon_loss(inputs["features"], inputs.get("labels"), temperature=TEMPERATURE,
                       base_temperature=TEMPERATURE)


def _tailwise_moco(inputs):
    from tailwise.functional import info_nce_loss
    return info_nce_loss(inputs["features"], inputs["queue"], temperature=TEMPERATURE)


def _make_supcon(n: int, v: int = 2, d: int = 128, labelled: bool = True):
    def make(device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        feats = F.normalize(torch.randn(n, v, d, generator=g), dim=-1).to(device=device, dtype=dtype)
        out = {"features": feats.requires_grad_()}
        if labelled:
            out["labels"] = torch.randint(0, CLASSES, (n,), generator=g).to(device)
        else:
            out["labels"] = torch.arange(n, device=device)  # only for the dense peers: SimCLR positives
        return out
    return make


def _make_moco(n: int, k: int, d: int = 128):
    def make(device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        feats = F.normalize(torch.randn(n, 2, d, generator=g), dim=-1).to(device=device, dtype=dtype)
        queue = F.normalize(torch.randn(k, d, generator=g), dim=-1).to(device=device, dtype=dtype)
        return {"features": feats.requires_grad_(), "queue": queue}
    return make


def _kernel_impls():
    """tailwise's two backends; the Triton one only where it can run (CUDA, or the interpreter)."""
    impls = [Impl("tailwise torch (row-chunked)", _tailwise_supcon, env={"TAILWISE_KERNELS": "torch"})]
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        impls.append(Impl("tailwise triton (fused)", _tailwise_supcon, needs="triton",
                          env={"TAILWISE_KERNELS": "triton"}))
    return impls


def _tf32(run):
    """Run with TF32 allowed for float32 matmuls (every implementation of a "tf32" case)."""
    def wrapped(inputs):
        mm = torch.backends.cuda.matmul
        old = mm.fp32_precision
        mm.fp32_precision = "tf32"
        try:
            return run(inputs)
        finally:
            mm.fp32_precision = old
    return wrapped


def cases(quick: bool) -> List[Case]:
    sizes = [256] if quick else [4096, 16384]
    big = [] if quick else [65536]
    out: List[Case] = []
    for n in sizes + big:
        for dtype in (torch.float32, torch.bfloat16):
            impls = [Impl("SupContrast algorithm (dense)",
                          lambda inp: supcontrast_dense(inp["features"], inp["labels"])),
                     Impl("pytorch-metric-learning SupConLoss", _pml_supcon, needs="pytorch_metric_learning"),
                     *_kernel_impls()]
            out.append(Case("contrastive", f"supcon N={n} V=2 D=128", _make_supcon(n), impls, dtype=dtype,
                            note="100 classes; the dense peers are expected to run out of memory at N=65536"))
        if n == 16384 or quick:
            tf32_impls = [Impl("SupContrast algorithm (dense), tf32",
                               _tf32(lambda inp: supcontrast_dense(inp["features"], inp["labels"])))]
            tf32_impls += [Impl(i.name + ", tf32", _tf32(i.run), needs=i.needs, env=i.env) for i in _kernel_impls()]
            out.append(Case("contrastive", f"supcon N={n} V=2 D=128 (tf32)", _make_supcon(n), tf32_impls))
    n = 256 if quick else 16384
    simclr = [Impl("SupContrast algorithm (dense)", lambda inp: supcontrast_dense(inp["features"], inp["labels"])),
              *[Impl(i.name, lambda inp: _tailwise_supcon({"features": inp["features"]}), needs=i.needs, env=i.env)
                for i in _kernel_impls()]]
    out.append(Case("contrastive", f"NT-Xent (labels=None) N={n} V=2 D=128", _make_supcon(n, labelled=False), simclr))
    n, k = (128, 512) if quick else (4096, 65536)
    moco = [Impl("MoCo reference (logits + cross_entropy)", lambda inp: moco_dense(inp["features"], inp["queue"])),
            *[Impl(i.name, _tailwise_moco, needs=i.needs, env=i.env) for i in _kernel_impls()]]
    out.append(Case("contrastive", f"MoCo InfoNCE N={n} queue={k} D=128", _make_moco(n, k), moco))
    return out
