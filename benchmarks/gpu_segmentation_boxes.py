"""GPU benchmark cases for the overlap kernel (Dice / Tversky / Dice+CE) and the box kernels.

Collected by ``benchmarks/gpu.py`` (``python benchmarks/gpu.py --only segmentation_boxes``).

* Dice on ``(8, 21, 256, 256)`` and ``(2, 14, 128, 128, 128)``, fp32 logits, int64 targets:
  MONAI ``DiceLoss`` / ``DiceCELoss`` with tailwise's settings (softmax, ``to_onehot_y``,
  background included, per image, ``smooth_nr = smooth_dr = 1e-5``), the one-hot textbook form,
  and tailwise ``dice`` / ``tversky`` / ``dice_ce`` on the torch path and on the Triton kernel.
* Boxes, 1,000,000 aligned pairs (xyxy, fp32): torchvision ``generalized_box_iou_loss`` /
  ``distance_box_iou_loss`` / ``complete_box_iou_loss``, the textbook eager formula, and
  tailwise ``giou`` / ``diou`` / ``ciou`` on the torch path and on the Triton kernel.

Bandwidth floors (H100, ~3 TB/s usable): Dice ``(2, 14, 128^3)`` reads the 235 MB of logits
twice and writes the 235 MB gradient (~0.24 ms, plus 2 x 34 MB of int64 target); boxes read
32 MB + 36 MB and write 36 MB (~0.035 ms), so 1M pairs are launch-bound.
"""

from __future__ import annotations

import math

import torch

from gpu import Case, Impl

SEG_SIZES = {"2d": (8, 21, 256, 256), "3d": (2, 14, 128, 128, 128)}
SEG_QUICK = {"2d": (2, 5, 17, 19), "3d": (2, 4, 9, 10, 11)}
TORCH = {"TAILWISE_KERNELS": "torch"}
TRITON = {"TAILWISE_KERNELS": "triton"}


# ----------------------------------------------------------------------------- segmentation
def _seg_make(shape):
    def make(device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(*shape, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
        t = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=g).to(device)
        return {"x": x, "t": t}
    return make


def onehot_dice(inputs):
    """The textbook form: softmax, one-hot target, sums over space (what most code bases write)."""
    x, t = inputs["x"], inputs["t"]
    p = torch.softmax(x, 1)
    y = torch.nn.functional.one_hot(t, x.shape[1]).movedim(-1, 1).to(p.dtype)
    dims = tuple(range(2, x.dim()))
    inter = (p * y).sum(dims)
    denom = p.sum(dims) + y.sum(dims)
    return (1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)).mean()


def _monai(name):
    def run(inputs):
        import monai.losses
        key = "_monai_" + name
        if key not in inputs:
            cls = getattr(monai.losses, name)
            inputs[key] = cls(softmax=True, to_onehot_y=True, include_background=True, smooth_nr=1e-5,
                              smooth_dr=1e-5, batch=False, reduction="mean")
        return inputs[key](inputs["x"], inputs["t"].unsqueeze(1))
    return run


def _tailwise(fn_name):
    def run(inputs):
        import tailwise.functional as F
        return getattr(F, fn_name)(inputs["x"], inputs["t"])
    return run


def _seg_cases(quick: bool):
    out = []
    for tag, shape in (SEG_QUICK if quick else SEG_SIZES).items():
        size = "x".join(map(str, shape))
        impls = [
            Impl("monai DiceLoss", _monai("DiceLoss"), needs="monai"),
            Impl("one-hot textbook dice", onehot_dice),
        ]
        for loss in ("dice", "tversky"):
            impls += [Impl(f"tailwise {loss} (torch)", _tailwise(f"{loss}_loss"), env=TORCH),
                      Impl(f"tailwise {loss} (triton)", _tailwise(f"{loss}_loss"), env=TRITON, needs="triton")]
        out.append(Case("segmentation", size, _seg_make(shape), impls,
                        note=f"{tag}; floor: 3 passes over the logits"))
        out.append(Case("segmentation", size, _seg_make(shape), [
            Impl("monai DiceCELoss", _monai("DiceCELoss"), needs="monai"),
            Impl("tailwise dice_ce (torch)", _tailwise("dice_ce_loss"), env=TORCH),
            Impl("tailwise dice_ce (triton)", _tailwise("dice_ce_loss"), env=TRITON, needs="triton"),
        ], note=f"{tag}; dice + cross-entropy"))
    return out


# ----------------------------------------------------------------------------- boxes
def _box_make(n):
    def make(device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) * 50 + 1
        t = torch.cat([xy, xy + wh], 1)
        p = t + torch.randn(n, 4, generator=g) * 5
        p = torch.cat([torch.minimum(p[:, :2], p[:, 2:]), torch.maximum(p[:, :2], p[:, 2:])], 1)
        return {"p": p.to(device=device, dtype=dtype).requires_grad_(True), "t": t.to(device=device, dtype=dtype)}
    return make


def textbook_box(kind, eps=1e-7):
    """One tensor op per formula term, autograd for the backward (the eager baseline)."""
    def run(inputs):
        p, t = inputs["p"], inputs["t"]
        x1, y1, x2, y2 = p.unbind(-1)
        X1, Y1, X2, Y2 = t.unbind(-1)
        inter = (torch.min(x2, X2) - torch.max(x1, X1)).clamp(min=0) * (torch.min(y2, Y2) - torch.max(y1, Y1)).clamp(min=0)
        union = (x2 - x1) * (y2 - y1) + (X2 - X1) * (Y2 - Y1) - inter + eps
        iou = inter / union
        cw = torch.max(x2, X2) - torch.min(x1, X1)
        ch = torch.max(y2, Y2) - torch.min(y1, Y1)
        if kind == "giou":
            c = cw * ch + eps
            return (1 - iou + (c - union) / c).mean()
        loss = 1 - iou + (((x1 + x2 - X1 - X2) / 2) ** 2 + ((y1 + y2 - Y1 - Y2) / 2) ** 2) / (cw ** 2 + ch ** 2 + eps)
        if kind == "ciou":
            v = 4 / math.pi ** 2 * (torch.atan2(X2 - X1, Y2 - Y1) - torch.atan2(x2 - x1, y2 - y1)) ** 2
            with torch.no_grad():
                alpha = v / (1 - iou + v + eps)
            loss = loss + alpha * v
        return loss.mean()
    return run


def _torchvision(fn_name):
    def run(inputs):
        import torchvision.ops
        return getattr(torchvision.ops, fn_name)(inputs["p"], inputs["t"], reduction="mean", eps=1e-7)
    return run


def _tailwise_box(fn_name):
    def run(inputs):
        import tailwise.functional as F
        return getattr(F, fn_name)(inputs["p"], inputs["t"])
    return run


def _box_cases(quick: bool):
    n = 1000 if quick else 1_000_000
    peers = {"giou": "generalized_box_iou_loss", "diou": "distance_box_iou_loss", "ciou": "complete_box_iou_loss"}
    out = []
    for kind, tv in peers.items():
        out.append(Case("boxes", f"{n} pairs {kind}", _box_make(n), [
            Impl(f"torchvision {tv}", _torchvision(tv), needs="torchvision"),
            Impl(f"textbook eager {kind}", textbook_box(kind)),
            Impl(f"tailwise {kind} (torch)", _tailwise_box(f"{kind}_loss"), env=TORCH),
            Impl(f"tailwise {kind} (triton)", _tailwise_box(f"{kind}_loss"), env=TRITON, needs="triton"),
        ], note="floor ~0.035 ms at 3 TB/s; launch-bound"))
    return out


def cases(quick: bool):
    return _seg_cases(quick) + _box_cases(quick)
