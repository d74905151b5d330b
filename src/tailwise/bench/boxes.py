"""``tailwise bench boxes``: the simulation experiment of the DIoU/CIoU paper, for every box loss.

Zheng et al., "Distance-IoU Loss", AAAI 2020 (arXiv 1911.08287), Sec. "Simulation Experiment",
following the authors' MATLAB script (github.com/Zzh-tju/DIoU, ``simulation experiment/
test_1715k.m``):

* targets: 7 boxes of area 1 centred at (10, 10), aspect ratios 1:4, 1:3, 1:2, 1:1, 2:1, 3:1, 4:1;
* anchors: centres uniform in the disc of radius 3 around (10, 10), each with 7 scales
  (area 0.5, 0.67, 0.75, 1, 1.33, 1.5, 2 times the target's) x 7 aspect ratios, regressed
  towards each of the 7 targets: 343 regression cases per centre (5,000 centres in the paper,
  1,715,000 cases);
* gradient descent on (x, y, w, h) for 200 iterations, step ``lr * (2 - IoU) * grad`` with
  ``lr`` = 0.1 for iterations 1-160, 0.01 for 161-180, 0.001 for 181-200 (the ``(2 - IoU)``
  factor speeds up low-IoU cases, as in the script);
* error of a case = ``|x - x_gt| + |y - y_gt| + |w - w_gt| + |h - h_gt|``; the curve is the
  total error over all cases at each iteration.

``--gradient paper`` follows the script exactly: its hand-written gradients, re-derived in
:mod:`tailwise.bench._paper_gradient` (IoU, GIoU, DIoU, CIoU), float64, no clamping.

Differences of the default ``--gradient exact``, on purpose: gradients come from tailwise's losses
by autograd (the script hand-codes them; see ``_paper_gradient`` for where they differ); widths
and heights are floored at 1e-3 after each step so a box never inverts (the script swaps edges
instead); Focal-EIoU's per-box gradient is used without the batch normalisation (which would only
divide the learning rate by the batch's summed weight). The default scale is small (30 centres,
10,290 cases) so the whole task runs in seconds; ``--full`` is the paper's 5,000 centres.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from ._report import pyplot, save_figure
from .task import BenchInputError, BenchTask

__all__ = ["TASK", "DEFAULT_LOSSES", "simulate", "make_cases"]

DEFAULT_LOSSES = ("iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "cdiou")
DEFAULT_SEEDS = (0,)
DEFAULT_POINTS = 30
FULL_POINTS = 5000
DEFAULT_ITERATIONS = 200
_RATIOS = (1 / 4, 1 / 3, 1 / 2, 1.0, 2.0, 3.0, 4.0)  # w / h, as the script's 7 (w, h) pairs
_SCALES = (0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0)
_CENTRE = 10.0
_RADIUS = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("boxes (DIoU simulation)")
    group.add_argument("--full", action="store_true",
                       help="boxes: the paper's scale, 5,000 anchor centres (1,715,000 cases per loss; "
                            "minutes per loss on CPU)")
    group.add_argument("--gradient", choices=("exact", "paper"), default="exact",
                       help="boxes: exact (autograd gradient of each tailwise loss, default) or paper (the DIoU "
                            "authors' hand-written MATLAB gradients for iou, giou, diou, ciou)")
    group.add_argument("--points", type=int, default=None,
                       help=f"boxes: anchor centres in the disc (default {DEFAULT_POINTS}; x 343 cases each)")


def make_cases(points: int, seed: int, dtype=torch.float32):
    """Anchors and targets ``(points * 343, 4)`` in cxcywh, ordered centre-major like the script."""
    rng = np.random.default_rng(seed)
    r = _RADIUS * np.sqrt(rng.random(points))
    theta = 2 * np.pi * rng.random(points)
    cx = _CENTRE + r * np.cos(theta)
    cy = _CENTRE + r * np.sin(theta)
    anchors, targets = [], []
    for i in range(points):
        for ratio_t in _RATIOS:
            wt, ht = math.sqrt(ratio_t), 1 / math.sqrt(ratio_t)  # area 1
            for scale in _SCALES:
                area = scale * wt * ht
                for ratio_a in _RATIOS:
                    anchors.append((cx[i], cy[i], math.sqrt(area * ratio_a), math.sqrt(area / ratio_a)))
                    targets.append((_CENTRE, _CENTRE, wt, ht))
    return (torch.tensor(anchors, dtype=dtype), torch.tensor(targets, dtype=dtype))


def _loss_fn(name: str):
    from .. import functional as F

    fn = getattr(F, f"{name}_loss", None)
    if fn is None:
        raise BenchInputError(f"loss {name!r} is not a box loss; box losses: {', '.join(DEFAULT_LOSSES)}")
    return fn


def _lr(k: int, iterations: int) -> float:
    """The script's schedule: 0.1 for the first 80% of the iterations, 0.01, then 0.001 for the last 10%."""
    frac = k / iterations
    return 0.1 if frac < 0.8 else (0.01 if frac < 0.9 else 0.001)


def simulate(name: str, anchors: torch.Tensor, targets: torch.Tensor, iterations: int,
             gradient: str = "exact") -> Dict:
    """Regress every anchor to its target by the paper's rule; returns the error curve and stats.

    ``gradient="exact"`` steps along tailwise's autograd gradient of the loss (widths and heights
    floored at 1e-3); ``"paper"`` along the authors' hand-written direction
    (:mod:`tailwise.bench._paper_gradient`, float64, no clamping, as their script).
    """
    if gradient == "paper":
        return _simulate_paper(name, anchors, targets, iterations)
    from ..boxes._geometry import pair_terms, to_xyxy

    fn = _loss_fn(name)
    t_xyxy = to_xyxy(targets, "cxcywh").unbind(-1)

    def iou_of(pred):
        return pair_terms(*to_xyxy(pred, "cxcywh").unbind(-1), *t_xyxy, 1e-7).iou

    pred = anchors.clone()
    with torch.no_grad():
        start_overlap = float((iou_of(pred) > 0).float().mean())
    errors: List[float] = []
    for k in range(iterations):
        lr = _lr(k, iterations)
        pred.requires_grad_(True)
        loss = fn(pred, targets, box_format="cxcywh", reduction="none", validate=False)
        (grad,) = torch.autograd.grad(loss.sum(), pred)
        with torch.no_grad():
            iou = iou_of(pred)
            pred = pred - lr * (2.0 - iou)[:, None] * grad
            pred[:, 2:].clamp_(min=1e-3)
            errors.append(float((pred - targets).abs().sum()))
    with torch.no_grad():
        final_iou = iou_of(pred)
    return _summary(anchors.shape[0], errors, start_overlap, final_iou)


def _simulate_paper(name: str, anchors: torch.Tensor, targets: torch.Tensor, iterations: int) -> Dict:
    from ._paper_gradient import PAPER_LOSSES, paper_direction, paper_iou

    if name not in PAPER_LOSSES:
        raise BenchInputError(f"--gradient paper: the authors' script has no gradient for {name!r}; it covers "
                              f"{', '.join(PAPER_LOSSES)}")
    pred, gt = anchors.to(torch.float64), targets.to(torch.float64)
    start_overlap = float((paper_iou(pred, gt) > 0).float().mean())
    errors: List[float] = []
    for k in range(iterations):
        iou = paper_iou(pred, gt)
        pred = pred + _lr(k, iterations) * (2.0 - iou)[:, None] * paper_direction(name, pred, gt)
        errors.append(float((pred - gt).abs().sum()))
    return _summary(anchors.shape[0], errors, start_overlap, paper_iou(pred, gt))


def _summary(n: int, errors: List[float], start_overlap: float, final_iou: torch.Tensor) -> Dict:
    return {"n_cases": n, "errors": [round(e, 4) for e in errors], "final_error": errors[-1] if errors else 0.0,
            "final_error_per_case": (errors[-1] / n) if errors else 0.0,
            "start_overlap_fraction": start_overlap,
            "final_no_overlap_fraction": float((final_iou <= 0).float().mean()),
            "final_mean_iou": float(final_iou.mean())}


# ------------------------------------------------------------------ task
def plan(args) -> List[Dict]:
    from ..registry import list_losses

    from ._device import resolve_device
    from ._paper_gradient import PAPER_LOSSES

    seeds = list(args.seeds) if getattr(args, "seeds", None) else list(DEFAULT_SEEDS)
    gradient = getattr(args, "gradient", None) or "exact"
    defaults = PAPER_LOSSES if gradient == "paper" else DEFAULT_LOSSES
    losses = list(args.losses) if getattr(args, "losses", None) else list(defaults)
    known = set(list_losses())
    unknown = [name for name in losses if name not in known]
    if unknown:
        raise BenchInputError(f"unknown loss {', '.join(unknown)}; `tailwise list` shows the registered names")
    not_box = [name for name in losses if name not in DEFAULT_LOSSES]
    if not_box:
        raise BenchInputError(f"{', '.join(not_box)} is not a box loss; the boxes task compares "
                              f"{', '.join(DEFAULT_LOSSES)}")
    points = getattr(args, "points", None) or (FULL_POINTS if getattr(args, "full", False) else DEFAULT_POINTS)
    if points <= 0:
        raise BenchInputError(f"--points must be positive, got {points}")
    if gradient == "paper":
        no_paper = [name for name in losses if name not in PAPER_LOSSES]
        if no_paper:
            raise BenchInputError(f"--gradient paper: the authors' script has no gradient for {', '.join(no_paper)}; "
                                  f"it covers {', '.join(PAPER_LOSSES)}")
    iterations = getattr(args, "epochs", None) or DEFAULT_ITERATIONS
    return [{"task": "boxes", "loss": loss, "seed": seed, "points": points, "iterations": iterations,
             "gradient": gradient, "device": resolve_device(args)}
            for loss in losses for seed in seeds]


_CASES: Dict = {}


def execute(spec: Dict, args) -> Dict:
    key = (spec["points"], spec["seed"])
    if key not in _CASES:  # the same anchors for every loss of a seed
        _CASES.clear()
        _CASES[key] = make_cases(spec["points"], spec["seed"])
    device = spec.get("device", "cpu")
    anchors, targets = (t.to(device) for t in _CASES[key])
    torch.manual_seed(spec["seed"])
    # ~10k-box elementwise ops: one thread is faster than two fighting over a shared 2-core machine
    threads = torch.get_num_threads()
    if spec["points"] <= DEFAULT_POINTS:
        torch.set_num_threads(1)
    try:
        out = simulate(spec["loss"], anchors, targets, spec["iterations"], spec.get("gradient", "exact"))
        out["device_name"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        return out
    finally:
        torch.set_num_threads(threads)


def _mean_curve(records: List[Dict]) -> np.ndarray:
    return np.mean([np.asarray(r["errors"], dtype=np.float64) for r in records], axis=0)


def report(records: List[Dict], args, out_dir: Path) -> str:
    if not records:
        return "## Boxes (DIoU simulation)\n\nNo finished runs."
    losses = list(dict.fromkeys(r["loss"] for r in records))
    first = records[0]
    T = first["iterations"]
    checkpoints = sorted({max(1, T // 10), max(1, T // 4), max(1, T // 2), T})
    curves = {loss: _mean_curve([r for r in records if r["loss"] == loss]) for loss in losses}
    stats = {loss: {k: float(np.mean([r[k] for r in records if r["loss"] == loss]))
                    for k in ("final_error", "final_no_overlap_fraction", "final_mean_iou")}
             for loss in losses}
    n_seeds = len({r["seed"] for r in records})
    lines = ["## Boxes (DIoU simulation)", "",
             f"Simulation of Zheng et al. (AAAI 2020, arXiv 1911.08287): {first['points']} anchor centres "
             f"x 343 anchor/target shapes = {first['n_cases']:,} regression cases per loss, {T} gradient-descent "
             f"iterations with the paper's (2 - IoU)-scaled step; {n_seeds} seed(s). Total error = sum over "
             f"cases of |dx| + |dy| + |dw| + |dh| (lower is better; the start is "
             f"{curves[losses[0]][0] if T else 0:,.0f} after one step). "
             f"{100 * first['start_overlap_fraction']:.0f}% of the anchors overlap their target at the start. "
             f"{_GRADIENT_TEXT[first.get('gradient', 'exact')]} Learning rate 0.1, decayed to 0.01 after iteration "
             f"{int(0.8 * T)} and to 0.001 after {int(0.9 * T)} (the script's schedule): the sudden flattening of "
             "the curves there is this decay, not convergence.",
             "",
             "| loss | " + " | ".join(f"error @ {c}" for c in checkpoints) + " | no overlap at end | mean IoU at end |",
             "|---|" + "---|" * (len(checkpoints) + 2)]
    best = min(losses, key=lambda l: stats[l]["final_error"])
    for loss in losses:
        cells = [f"{curves[loss][c - 1]:,.1f}" for c in checkpoints]
        if loss == best:
            cells[-1] = f"**{cells[-1]}**"
        lines.append(f"| {loss} | " + " | ".join(cells) + f" | {100 * stats[loss]['final_no_overlap_fraction']:.1f}% | "
                     f"{stats[loss]['final_mean_iou']:.3f} |")
    lines += ["", _ordering(curves, stats, checkpoints, first.get("gradient", "exact")), ""]
    png = _plot(curves, out_dir, T)
    if png:
        lines.append(f"![total regression error vs iteration]({png})")
    return "\n".join(lines)


def _ordering(curves, stats, checkpoints, gradient: str = "exact") -> str:
    order = sorted(curves, key=lambda l: stats[l]["final_error"])
    text = "**Final-error ordering (best first):** " + " < ".join(f"`{l}`" for l in order) + "."
    checks = []
    mid = checkpoints[1] - 1
    if {"diou", "giou"} <= set(curves):
        checks.append(("DIoU converges faster than GIoU", curves["diou"][mid] < curves["giou"][mid]
                       and stats["diou"]["final_error"] <= stats["giou"]["final_error"]))
    if {"ciou", "giou"} <= set(curves):
        checks.append(("CIoU converges faster than GIoU", curves["ciou"][mid] < curves["giou"][mid]
                       and stats["ciou"]["final_error"] <= stats["giou"]["final_error"]))
    if "iou" in curves:
        others = [l for l in ("giou", "diou", "ciou") if l in curves]
        checks.append(("IoU stalls on non-overlapping anchors (worst final error, anchors left without "
                       "overlap)", stats["iou"]["final_no_overlap_fraction"] > 0
                       and all(stats["iou"]["final_error"] >= stats[l]["final_error"] for l in others)))
    if checks:
        text += " Paper's claims (Zheng et al., Fig. 3/4): " + "; ".join(
            f"{claim}: {'reproduced' if ok else 'NOT reproduced'}" for claim, ok in checks) + "."
    if gradient == "paper":
        text += (" Focal-EIoU, EIoU and CDIoU have no gradient in the authors' script, so they are not in this run.")
    else:
        text += (" These runs step along each loss's exact gradient; `--gradient paper` repeats the simulation with "
                 "the authors' hand-written gradients (docs/bench.md has both results). Focal-EIoU's weight "
                 "IoU^0.5 is 0 without overlap, so like IoU it cannot move non-overlapping anchors.")
    return text


def _plot(curves, out_dir: Path, iterations: int):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for loss, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=loss, linewidth=1.5)
    ax.set_yscale("log")
    for at, text in ((int(0.8 * iterations), "lr 0.1 -> 0.01"), (int(0.9 * iterations), "lr -> 0.001")):
        ax.axvline(at, color="grey", linestyle=":", linewidth=1)
        ax.annotate(text, xy=(at, 1), xycoords=("data", "axes fraction"), xytext=(-3, -4),
                    textcoords="offset points", rotation=90, ha="right", va="top", fontsize=7, color="grey")
    ax.set_xlabel("iteration")
    ax.set_ylabel("total regression error (log scale)")
    ax.set_title("DIoU-paper simulation: regression error vs iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, out_dir, "boxes_simulation.png")


_GRADIENT_TEXT = {
    "exact": "Each step follows the loss's exact autograd gradient (widths and heights floored at 1e-3).",
    "paper": ("Each step follows the DIoU authors' hand-written MATLAB gradients (`--gradient paper`: width/height "
              "steps twice the chain rule's, DIoU/CIoU's enclosing-diagonal term with its sign flipped for x/y and "
              "width/height terms coupled, CIoU's aspect term without 1/(w^2+h^2); float64, no clamping)."),
}


TASK = BenchTask(name="boxes", help="DIoU-paper box-regression simulation over the IoU-family losses",
                 plan=plan, execute=execute, report=report, add_arguments=add_arguments)
