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

Differences, on purpose: gradients come from tailwise's losses by autograd (the script hand-codes
them; its CIoU gradient drops the ``1/(w^2+h^2)`` factor of ``v``, tailwise keeps it); widths
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


def simulate(name: str, anchors: torch.Tensor, targets: torch.Tensor, iterations: int) -> Dict:
    """Regress every anchor to its target by the paper's rule; returns the error curve and stats."""
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
        frac = k / iterations
        lr = 0.1 if frac < 0.8 else (0.01 if frac < 0.9 else 0.001)
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
    n = anchors.shape[0]
    return {"n_cases": n, "errors": [round(e, 4) for e in errors], "final_error": errors[-1] if errors else 0.0,
            "final_error_per_case": (errors[-1] / n) if errors else 0.0,
            "start_overlap_fraction": start_overlap,
            "final_no_overlap_fraction": float((final_iou <= 0).float().mean()),
            "final_mean_iou": float(final_iou.mean())}


# ------------------------------------------------------------------ task
def plan(args) -> List[Dict]:
    from ..registry import list_losses

    seeds = list(args.seeds) if getattr(args, "seeds", None) else list(DEFAULT_SEEDS)
    losses = list(args.losses) if getattr(args, "losses", None) else list(DEFAULT_LOSSES)
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
    iterations = getattr(args, "epochs", None) or DEFAULT_ITERATIONS
    return [{"task": "boxes", "loss": loss, "seed": seed, "points": points, "iterations": iterations}
            for loss in losses for seed in seeds]


_CASES: Dict = {}


def execute(spec: Dict, args) -> Dict:
    key = (spec["points"], spec["seed"])
    if key not in _CASES:  # the same anchors for every loss of a seed
        _CASES.clear()
        _CASES[key] = make_cases(spec["points"], spec["seed"])
    anchors, targets = _CASES[key]
    torch.manual_seed(spec["seed"])
    # ~10k-box elementwise ops: one thread is faster than two fighting over a shared 2-core machine
    threads = torch.get_num_threads()
    if spec["points"] <= DEFAULT_POINTS:
        torch.set_num_threads(1)
    try:
        return simulate(spec["loss"], anchors, targets, spec["iterations"])
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
             f"{100 * first['start_overlap_fraction']:.0f}% of the anchors overlap their target at the start.",
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
    lines += ["", _ordering(curves, stats, checkpoints), ""]
    png = _plot(curves, out_dir)
    if png:
        lines.append(f"![total regression error vs iteration]({png})")
    return "\n".join(lines)


def _ordering(curves, stats, checkpoints) -> str:
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
    text += (" Note: these runs use each loss's exact gradient. The authors' script hand-codes the DIoU/CIoU "
             "gradients with the enclosing-diagonal term's sign flipped for x/y (it shrinks the enclosing box "
             "instead of growing it) and with width/height terms coupled, a plausible reason why DIoU/CIoU beat "
             "GIoU in the paper's curves; with exact gradients the penalty rho^2/c^2 also rewards growing c, "
             "so DIoU can trail GIoU. Focal-EIoU's weight IoU^0.5 is 0 without overlap, so like IoU it cannot "
             "move non-overlapping anchors.")
    return text


def _plot(curves, out_dir: Path):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for loss, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=loss, linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("total regression error (log scale)")
    ax.set_title("DIoU-paper simulation: regression error vs iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, out_dir, "boxes_simulation.png")


TASK = BenchTask(name="boxes", help="DIoU-paper box-regression simulation over the IoU-family losses",
                 plan=plan, execute=execute, report=report, add_arguments=add_arguments)
