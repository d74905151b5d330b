"""Speed and peak memory of tailwise's GIoU / DIoU / CIoU vs the textbook eager formulation.

The baseline is written the way torchvision.ops writes these losses: one tensor op per formula
term on column views of the (N, 4) inputs, autograd for the backward (CIoU's alpha under
no_grad, as torchvision and the official code). tailwise runs its default call path
(``tailwise.functional.<name>_loss`` with validation on, backend "auto"), after a warm-up that
includes the one-off ``torch.compile`` of the fused kernels (its latency is printed separately).

Timing: forward + backward of the mean loss, median of ``--repeats`` runs (the machine is shared,
so single timings are noisy). Peak memory: in a fresh subprocess per (loss, implementation) with
``MALLOC_MMAP_THRESHOLD_=131072`` (large tensors go back to the OS when freed), after a warm-up,
the peak-RSS mark is reset (``/proc/self/clear_refs``, Linux) and ``VmHWM - VmRSS`` of one
forward+backward is reported: inputs excluded, the gradient and every intermediate included.

    python benchmarks/boxes.py                # N = 1,000,000, all three losses
    python benchmarks/boxes.py --n 100000 --losses giou --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch


# --------------------------------------------------------------------- textbook baseline
def textbook_loss(boxes1, boxes2, kind, eps=1e-7):
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1 = torch.max(x1, x1g)
    ykis1 = torch.max(y1, y1g)
    xkis2 = torch.min(x2, x2g)
    ykis2 = torch.min(y2, y2g)
    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    iou = intsctk / (unionk + eps)
    xc1 = torch.min(x1, x1g)
    yc1 = torch.min(y1, y1g)
    xc2 = torch.max(x2, x2g)
    yc2 = torch.max(y2, y2g)
    if kind == "giou":
        area_c = (xc2 - xc1) * (yc2 - yc1)
        return 1 - (iou - ((area_c - unionk) / (area_c + eps)))
    diag = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    xp = (x2 + x1) / 2
    yp = (y2 + y1) / 2
    xg = (x1g + x2g) / 2
    yg = (y1g + y2g) / 2
    dist = ((xp - xg) ** 2) + ((yp - yg) ** 2)
    loss = 1 - iou + dist / diag
    if kind == "ciou":
        w_pred = x2 - x1
        h_pred = y2 - y1
        w_gt = x2g - x1g
        h_gt = y2g - y1g
        v = (4 / (math.pi ** 2)) * torch.pow((torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred)), 2)
        with torch.no_grad():
            alpha = v / (1 - iou + v + eps)
        loss = loss + alpha * v
    return loss


def make_boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    p = torch.cat([xy, xy + wh], 1)
    xy2 = xy + torch.randn(n, 2, generator=g) * 5
    wh2 = wh * (0.7 + 0.6 * torch.rand(n, 2, generator=g))
    t = torch.cat([xy2, xy2 + wh2], 1)
    return p, t


def _call(impl, kind, p, t):
    if impl == "eager":
        return textbook_loss(p, t, kind).mean()
    import tailwise.functional as F
    return getattr(F, f"{kind}_loss")(p, t)


def _step(impl, kind, p, t):
    p.grad = None
    loss = _call(impl, kind, p, t)
    loss.backward()
    return loss


def _worker(kind, n, repeats, warmup):
    """Runs in a subprocess: warm up both, then alternate eager / tailwise so both see the same load."""
    torch.manual_seed(0)
    p, t = make_boxes(n)
    p.requires_grad_(True)
    out = {}
    for impl in ("eager", "tailwise"):
        t0 = time.perf_counter()
        _step(impl, kind, p, t)
        out[impl] = {"first_call_s": time.perf_counter() - t0, "times": []}
        for _ in range(warmup):
            _step(impl, kind, p, t)
    for _ in range(repeats):
        for impl in ("eager", "tailwise"):
            t0 = time.perf_counter()
            _step(impl, kind, p, t)
            out[impl]["times"].append(time.perf_counter() - t0)
    for impl in out:
        ts = out[impl].pop("times")
        out[impl].update(median_ms=statistics.median(ts) * 1e3, min_ms=min(ts) * 1e3)
    return out


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_worker(impl, kind, n):
    """Fresh process: extra resident memory (MiB) one forward+backward needs, after a warm-up.

    Linux only. The subprocess runs with ``MALLOC_MMAP_THRESHOLD_=131072`` so every large tensor
    is mmapped and returned to the OS when freed (otherwise glibc keeps freed pages resident and
    a second step would show no growth at all); the peak-RSS mark (VmHWM) is reset through
    ``/proc/self/clear_refs`` after the warm-up, which also compiles tailwise's kernels.
    Inputs are allocated before and not counted; the gradient and every intermediate are.
    """
    import gc

    p, t = make_boxes(n)
    p.requires_grad_(True)
    _step(impl, kind, p, t)
    p.grad = None
    gc.collect()
    rss = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    _step(impl, kind, p, t)
    return {"peak_extra_mib": max(_status_kb("VmHWM") - rss, 0) / 1024.0}


def _subprocess(args):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(args)],
                         capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_fused_grad(n=4096):
    """The fused backward equals autograd of the textbook formula (float64)."""
    from tailwise.boxes._fused import fused_box_loss

    p, t = make_boxes(n, seed=1)
    p, t = p.double(), t.double()
    worst = 0.0
    for kind in ("giou", "diou", "ciou"):
        a = p.clone().requires_grad_(True)
        b = p.clone().requires_grad_(True)
        g1 = torch.autograd.grad(fused_box_loss(a, t, 1e-7, kind).sum(), a)[0]
        g2 = torch.autograd.grad(textbook_loss(b, t, kind).sum(), b)[0]
        worst = max(worst, (g1 - g2).abs().max().item())
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--losses", default="giou,diou,ciou")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._worker:
        spec = json.loads(args._worker)
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        fn = _peak_worker if spec.pop("mode") == "peak" else _worker
        spec.pop("threads", None)
        print(json.dumps(fn(**spec)))
        return 0

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fused backward vs autograd "
          f"(float64, max abs diff): {check_fused_grad():.2e}")
    rows = []
    for kind in [k.strip() for k in args.losses.split(",") if k.strip()]:
        res = _subprocess({"mode": "time", "kind": kind, "n": args.n, "repeats": args.repeats,
                           "warmup": args.warmup, "threads": args.threads})
        for impl in ("eager", "tailwise"):
            if not args.no_memory:
                res[impl].update(_subprocess({"mode": "peak", "impl": impl, "kind": kind, "n": args.n,
                                              "threads": args.threads}))
        rows.append((kind, res))
    print("| loss | N | eager ms | tailwise ms | ratio | eager peak MiB | tailwise peak MiB | "
          "tailwise first call s (compile) |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, res in rows:
        e, w = res["eager"], res["tailwise"]
        pe = f"{e['peak_extra_mib']:.0f}" if "peak_extra_mib" in e else "-"
        pw = f"{w['peak_extra_mib']:.0f}" if "peak_extra_mib" in w else "-"
        print(f"| {kind} | {args.n:,} | {e['median_ms']:.1f} | {w['median_ms']:.1f} | "
              f"{e['median_ms'] / w['median_ms']:.2f}x | {pe} | {pw} | {w['first_call_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
