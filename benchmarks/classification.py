"""Speed and peak memory of the classification losses vs their textbook eager formulations.

Owned by the classification-family helper; the Equalization Losses section at the end is a
separate function (``equalization_rows``) maintained with ``classification/eqlv2.py``.

    python benchmarks/classification.py --only eqlv2           # N=65536, C=1000 (~1 min)
    python benchmarks/classification.py --only eqlv2 --n 16384
"""

from __future__ import annotations

import argparse


# ============================================================================================
# Equalization Losses (EQLv2) rows -- maintained with src/tailwise/classification/eqlv2.py
# ============================================================================================
def _eqlv2_case(name, n, c, reps):
    """Median forward+backward seconds of one implementation (run inside a fresh subprocess)."""
    import resource
    import time

    import torch
    import torch.nn.functional as F

    from tailwise.classification.eqlv2 import EQLv2Loss

    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, c, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    onehot = F.one_hot(y, c).float() if name == "bce" else None
    crit = EQLv2Loss(c)
    crit(z0[:256], y[:256])  # non-trivial statistics for every row below

    def run():
        z = z0.clone().requires_grad_(True)
        if name == "bce":  # F.binary_cross_entropy_with_logits on a precomputed one-hot target
            loss = F.binary_cross_entropy_with_logits(z, onehot, reduction="sum") / n
        elif name == "eqlv2":  # tailwise (fused; includes the statistic update)
            loss = crit(z, y)
        else:  # textbook: the official mmdet EQLv2 forward + collect_grad, written eagerly
            t = z.new_zeros(n, c)
            t[torch.arange(n), y] = 1
            pos_w, neg_w = crit.current_weights()
            w = pos_w.view(1, -1).expand(n, c) * t + neg_w.view(1, -1).expand(n, c) * (1 - t)
            loss = (F.binary_cross_entropy_with_logits(z, t, reduction="none") * w).sum() / n
            with torch.no_grad():
                p = torch.sigmoid(z.detach())
                grad = (t * (p - 1) + (1 - t) * p).abs()
                (grad * t * w).sum(0), (grad * (1 - t) * w).sum(0)
        loss.backward()

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return sorted(times)[len(times) // 2], peak_mib


def equalization_rows(n=65536, c=1000, reps=3):
    """Print EQLv2 vs ``F.binary_cross_entropy_with_logits`` vs the official eager EQLv2.

    Times include cloning the logits (same for every row). Each implementation runs in a fresh
    subprocess; peak memory is the growth of its peak RSS (``ru_maxrss``) over the value after
    setup (logits, labels, module), i.e. the extra memory forward+backward needed (includes
    allocator slack).
    """
    import json
    import subprocess
    import sys

    print(f"\nEQLv2, N={n}, C={c}, forward+backward (median of {reps}), float32 CPU")
    print(f"{'implementation':<34}{'time [s]':>10}{'x BCE':>8}{'peak +RSS [MiB]':>17}")
    res = {}
    for name in ("bce", "eqlv2", "textbook"):
        code = (f"import json, sys; sys.path.insert(0, {repr(__file__.rsplit('/', 1)[0])}); "
                f"from classification import _eqlv2_case; "
                f"print(json.dumps(_eqlv2_case({name!r}, {n}, {c}, {reps})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    label = {"bce": "F.binary_cross_entropy_with_logits", "eqlv2": "tailwise EQLv2Loss",
             "textbook": "official-style eager EQLv2"}
    for name, (t, mem) in res.items():
        print(f"{label[name]:<34}{t:>10.3f}{t / res['bce'][0]:>8.2f}{mem:>17.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="eqlv2", choices=["eqlv2"], help="which table to print")
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--c", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the subprocesses")
    args = parser.parse_args()
    if args.threads:
        import os
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.only == "eqlv2":
        equalization_rows(args.n, args.c, args.reps)
