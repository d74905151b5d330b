"""GPU benchmark cases of the classification kernels (collected by ``benchmarks/gpu.py``).

Sizes and peers of issue 13:

* softmax family, ``(65536, 1000)`` logits, float32 and bfloat16: ``F.cross_entropy``, Liger
  ``LigerCrossEntropyLoss``, and tailwise ``cross_entropy`` / ``focal`` / ``balanced_softmax`` /
  ``logit_adjusted`` / ``class_balanced`` with ``TAILWISE_KERNELS=torch`` and ``=triton`` (plus
  the in-place mode), next to their textbook PyTorch formulations;
* sigmoid family, ``(1_000_000, 80)`` and ``(200_000, 1203)``: torchvision
  ``sigmoid_focal_loss``, ``F.binary_cross_entropy_with_logits``, tailwise ``sigmoid_focal`` /
  ``equalized_focal`` / ``eqlv2`` / ``bal_bce`` on both backends;
* fused linear + CE, ``N=16384, H=2048, C=32000`` bfloat16: torch ``linear`` then
  ``F.cross_entropy``, Liger ``LigerFusedLinearCrossEntropyLoss``, tailwise
  ``linear_cross_entropy`` for every adjustment.

``--quick`` shrinks every size (a smoke test that also runs on the CPU, torch backend only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gpu import Case, Impl

TORCH = {"TAILWISE_KERNELS": "torch"}
TRITON = {"TAILWISE_KERNELS": "triton"}


def _counts(c: int, device) -> torch.Tensor:
    # a long-tailed prior (Zipf-like, imbalance ratio ~100)
    return torch.tensor([max(1, round(1000 * (k + 1) ** -0.67)) for k in range(c)], dtype=torch.float64,
                        device=device)


def _cb_weights(counts):
    import tailwise
    return tailwise.class_balanced_weights(counts.cpu(), 0.9999).float().to(counts.device)


def _tw():
    import tailwise.functional as TF
    return TF


def _both(name, fn, quick):
    """The tailwise implementation on the torch path and on the Triton kernel (GPU only)."""
    out = [Impl(f"tailwise {name} (torch)", fn, env=TORCH)]
    if not quick:
        out.append(Impl(f"tailwise {name} (triton)", fn, env=TRITON))
    return out


# --- softmax family ---------------------------------------------------------------------------

def _softmax_case(n, c, dtype, quick):
    def make(device, dt):
        g = torch.Generator(device="cpu").manual_seed(0)
        z = torch.randn(n, c, generator=g).mul_(2).to(device=device, dtype=dt).requires_grad_()
        y = torch.randint(0, c, (n,), generator=g).to(device)
        counts = _counts(c, device)
        return {"z": z, "y": y, "counts": counts, "logp": torch.log(counts / counts.sum()).float(),
                "cb": _cb_weights(counts)}

    def liger(inp):
        from liger_kernel.transformers import LigerCrossEntropyLoss
        return LigerCrossEntropyLoss()(inp["z"], inp["y"])

    def textbook_focal(inp, gamma=2.0):
        logp = F.log_softmax(inp["z"].float(), 1).gather(1, inp["y"][:, None])[:, 0]
        return (-(1 - logp.exp()).pow(gamma) * logp).mean()

    def tw_inplace(inp):
        import tailwise
        with tailwise.kernels.inplace_gradients():
            # a view of the leaf: the kernel overwrites the logits with their gradient (timing only)
            return _tw().cross_entropy_loss(inp["z"].view_as(inp["z"]), inp["y"])

    impls = [
        Impl("F.cross_entropy", lambda i: F.cross_entropy(i["z"].float() if i["z"].dtype != torch.float32
                                                          else i["z"], i["y"])),
        Impl("Liger LigerCrossEntropyLoss", liger, needs="liger_kernel"),
        *_both("cross_entropy", lambda i: _tw().cross_entropy_loss(i["z"], i["y"]), quick),
        *([] if quick else [Impl("tailwise cross_entropy (triton, in-place)", tw_inplace,
                                 env=TRITON)]),
        Impl("textbook focal (autograd)", textbook_focal),
        *_both("focal", lambda i: _tw().focal_loss(i["z"], i["y"], gamma=2.0), quick),
        Impl("textbook balanced softmax: F.cross_entropy(z + log prior)",
             lambda i: F.cross_entropy(i["z"].float() + i["logp"], i["y"])),
        *_both("balanced_softmax", lambda i: _tw().balanced_softmax_loss(i["z"], i["y"], i["counts"]), quick),
        *_both("logit_adjusted (tau=0.5)",
               lambda i: _tw().logit_adjusted_loss(i["z"], i["y"], i["counts"], tau=0.5), quick),
        Impl("textbook class-balanced CE: (F.cross_entropy(..., 'none') * w[y]).mean()",
             lambda i: (F.cross_entropy(i["z"].float(), i["y"], reduction="none") * i["cb"][i["y"]]).mean()),
        *_both("class_balanced (softmax)",
               lambda i: _tw().class_balanced_loss(i["z"], i["y"], i["counts"], loss_type="softmax"), quick),
    ]
    return Case("softmax family", f"{n}x{c}", make, impls, dtype=dtype,
                note="fwd+bwd; the in-place row overwrites the logits with their gradient")


# --- sigmoid family ---------------------------------------------------------------------------

def _sigmoid_case(n, c, quick):
    def make(device, dt):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(n, c, generator=g).sub_(2).to(device=device, dtype=dt).requires_grad_()
        y = torch.randint(0, c, (n,), generator=g).to(device)
        onehot = F.one_hot(y, c).to(dt)
        from tailwise.classification.eqlv2 import EQLv2Loss
        return {"x": x, "y": y, "t": onehot, "counts": _counts(c, device),
                "pos": torch.rand(c, generator=g).to(device), "neg": torch.rand(c, generator=g).add_(1).to(device),
                "eql_module": EQLv2Loss(c).to(device).train()}

    def tv(inp):
        from torchvision.ops import sigmoid_focal_loss
        return sigmoid_focal_loss(inp["x"], inp["t"], reduction="mean")

    def eqlv2(inp):
        from tailwise.classification.eqlv2 import eqlv2_loss
        return eqlv2_loss(inp["x"], inp["y"], inp["pos"], inp["neg"])

    def efl(inp):
        from tailwise.classification.equalized_focal import equalized_focal_loss
        return equalized_focal_loss(inp["x"], inp["y"], inp["pos"], inp["neg"])

    impls = [
        Impl("torchvision sigmoid_focal_loss", tv, needs="torchvision"),
        Impl("F.binary_cross_entropy_with_logits (one-hot)",
             lambda i: F.binary_cross_entropy_with_logits(i["x"], i["t"])),
        *_both("sigmoid_focal (one-hot float target)", lambda i: _tw().sigmoid_focal_loss(i["x"], i["t"]), quick),
        *_both("equalized_focal (class indices)", efl, quick),
        *_both("eqlv2 (class indices)", eqlv2, quick),
        *_both("EQLv2Loss module, training (loss + statistics)", lambda i: i["eql_module"](i["x"], i["y"]), quick),
        *_both("bal_bce (class indices)", lambda i: _tw().bal_bce_loss(i["x"], i["y"], i["counts"]), quick),
        *_both("class_balanced (focal)",
               lambda i: _tw().class_balanced_loss(i["x"], i["y"], i["counts"], loss_type="focal"), quick),
    ]
    return Case("sigmoid family", f"{n}x{c}", make, impls, dtype=torch.float32)


# --- fused linear + cross-entropy -------------------------------------------------------------

def _linear_case(n, h, c, quick):
    def make(device, dt):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(n, h, generator=g).div_(math.sqrt(h)).to(device=device, dtype=dt).requires_grad_()
        w = torch.randn(c, h, generator=g).to(device=device, dtype=dt).requires_grad_()
        y = torch.randint(0, c, (n,), generator=g).to(device)
        counts = _counts(c, device)
        return {"x": x, "w": w, "y": y, "counts": counts, "logp": torch.log(counts / counts.sum()).float(),
                "cw": (counts.sum() / counts / c).float()}

    def liger(inp):
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        return LigerFusedLinearCrossEntropyLoss()(inp["w"], inp["x"], inp["y"])

    def lce(**kw):
        return lambda i: _tw().linear_cross_entropy_loss(
            i["x"], i["w"], i["y"], **{k: (i[v] if isinstance(v, str) else v) for k, v in kw.items()})

    impls = [
        Impl("torch linear + F.cross_entropy", lambda i: F.cross_entropy((i["x"] @ i["w"].T).float(), i["y"])),
        Impl("torch linear + balanced softmax", lambda i: F.cross_entropy((i["x"] @ i["w"].T).float() + i["logp"],
                                                                           i["y"])),
        Impl("Liger LigerFusedLinearCrossEntropyLoss", liger, needs="liger_kernel"),
    ]
    for name, kw in [("plain", {}), ("balanced softmax", {"class_counts": "counts"}),
                     ("logit adjusted tau=0.5", {"class_counts": "counts", "tau": 0.5}),
                     ("focal gamma=2", {"gamma": 2.0}), ("class_weight", {"class_weight": "cw"}),
                     ("label smoothing 0.1", {"label_smoothing": 0.1})]:
        impls += _both(f"linear_cross_entropy {name}", lce(**kw), quick)
    return Case("linear + CE", f"N={n},H={h},C={c}", make, impls, dtype=torch.bfloat16)


def cases(quick: bool):
    if quick:
        return [_softmax_case(512, 100, torch.float32, True), _softmax_case(512, 100, torch.bfloat16, True),
                _sigmoid_case(1000, 80, True), _sigmoid_case(200, 1203, True), _linear_case(256, 64, 1000, True)]
    return [_softmax_case(65536, 1000, torch.float32, False), _softmax_case(65536, 1000, torch.bfloat16, False),
            _sigmoid_case(1_000_000, 80, False), _sigmoid_case(200_000, 1203, False),
            _linear_case(16384, 2048, 32000, False)]
