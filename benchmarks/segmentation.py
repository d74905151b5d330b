"""Forward+backward time and peak memory of the segmentation overlap losses.

Compares tailwise's ``dice_loss`` / ``tversky_loss`` (multi-class softmax, integer targets: no
one-hot, custom backward through the softmax) with the straightforward eager formulation
(one-hot materialised, softmax, three reductions) and, when ``monai`` is importable, MONAI's
``DiceLoss(softmax=True, to_onehot_y=True)``.

Peak memory: each variant runs in a fresh subprocess; the number reported is the growth of the
process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) during one
forward+backward, over the level reached after the inputs were created (CPU). On CUDA it is
``torch.cuda.max_memory_allocated`` over the same baseline.

    python benchmarks/segmentation.py                    # (8, 21, 256, 256), CPU
    python benchmarks/segmentation.py --shape 2 4 64 64 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

VARIANTS = ["naive_dice", "tailwise_dice", "naive_tversky", "tailwise_tversky", "monai_dice"]


def naive_dice(logits, target, smooth=1e-5):
    c = logits.shape[1]
    onehot = F.one_hot(target, c).movedim(-1, 1).to(logits.dtype)
    p = torch.softmax(logits, 1)
    dims = tuple(range(2, logits.dim()))
    inter = (p * onehot).sum(dims)
    sp = p.sum(dims)
    sy = onehot.sum(dims)
    return (1 - (2 * inter + smooth) / (sp + sy + smooth)).mean()


def naive_tversky(logits, target, alpha=0.3, beta=0.7, smooth=1.0):
    c = logits.shape[1]
    onehot = F.one_hot(target, c).movedim(-1, 1).to(logits.dtype)
    p = torch.softmax(logits, 1)
    dims = tuple(range(2, logits.dim()))
    tp = (p * onehot).sum(dims)
    fp = (p * (1 - onehot)).sum(dims)
    fn = ((1 - p) * onehot).sum(dims)
    return (1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)).mean()


def make_fn(name):
    from tailwise.functional import dice_loss, tversky_loss
    if name == "naive_dice":
        return naive_dice
    if name == "naive_tversky":
        return naive_tversky
    if name == "tailwise_dice":
        return dice_loss
    if name == "tailwise_tversky":
        return tversky_loss
    if name == "monai_dice":
        from monai.losses import DiceLoss
        m = DiceLoss(softmax=True, to_onehot_y=True)
        return lambda x, t: m(x, t.unsqueeze(1))
    raise ValueError(name)


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_one(name, shape, device, repeats, threads):
    torch.set_num_threads(threads)
    try:
        fn = make_fn(name)
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(device).requires_grad_(True)
    t = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=g).to(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mib()
    loss = fn(x, t)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = _rss_mib() - base
    times = []
    for _ in range(repeats):
        x.grad = None
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x, t).backward()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times), "peak_mib": peak, "loss": float(loss)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs="+", default=[8, 21, 256, 256])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        res = run_one(args._child, args.shape, args.device, args.repeats, args.threads)
        print(json.dumps(res))
        return
    rows = {}
    for name in args.variants:
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", name, "--shape", *map(str, args.shape),
               "--device", args.device, "--repeats", str(args.repeats), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows[name] = json.loads(out)
    print(f"shape={tuple(args.shape)} device={args.device} threads={args.threads} "
          f"(median of {args.repeats} forward+backward runs; peak = growth of max RSS / CUDA allocated)")
    print(f"{'variant':<18}{'ms':>10}{'speed-up':>10}{'peak MiB':>11}{'mem ratio':>11}{'loss':>10}")
    for name, r in rows.items():
        if r is None:
            print(f"{name:<18}{'(not installed)':>30}")
            continue
        ref = rows.get("naive_tversky" if "tversky" in name else "naive_dice")
        speed = ref["ms"] / r["ms"] if ref else float("nan")
        mem = r["peak_mib"] / ref["peak_mib"] if ref and ref["peak_mib"] > 0 else float("nan")
        print(f"{name:<18}{r['ms']:>10.1f}{speed:>9.2f}x{r['peak_mib']:>11.1f}{mem:>10.2f}x{r['loss']:>10.5f}")


if __name__ == "__main__":
    main()
