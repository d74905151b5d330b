"""Speed and peak memory of the classification losses vs their textbook eager formulations.

Forward + backward of one (N, C) batch of float32 logits on the CPU, median of ``--reps`` runs.
Every implementation runs in a fresh subprocess; "peak +RSS" is the growth of that process's
peak resident set (``resource.getrusage(...).ru_maxrss``) over its value after the inputs were
built, i.e. the extra memory forward+backward needed (includes allocator slack).

    python benchmarks/classification.py                     # all tables, N=65536, C=1000
    python benchmarks/classification.py --only focal        # softmax + sigmoid focal only
    python benchmarks/classification.py --only eqlv2 --n 16384

Tables: softmax focal vs ``F.cross_entropy`` (target: within 2x) and vs a textbook autograd
focal; sigmoid focal vs the torchvision formulation written eagerly (target: no slower);
EQLv2 rows (maintained with ``classification/eqlv2.py``, see ``equalization_rows``).
To add rows for another loss, add a case to ``_CASES`` below (a name -> builder returning a
closure that runs forward+backward) and list it in a table in ``focal_rows`` or a new
``*_rows`` function called from ``__main__``.
"""

from __future__ import annotations

import argparse


# ============================================================================================
# Focal losses (softmax and sigmoid) -- maintained with src/tailwise/classification/focal.py
# ============================================================================================
def _textbook_softmax_focal(z, y, gamma=2.0):
    import torch.nn.functional as F

    logp = F.log_softmax(z, dim=1).gather(1, y[:, None]).squeeze(1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def _torchvision_sigmoid_focal(x, t, alpha=0.25, gamma=2.0):
    """``torchvision.ops.sigmoid_focal_loss`` (v0.15+) written out, reduction='mean'."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * loss).mean()


def _textbook_sigmoid_focal_pos_weight(x, t, pos_weight, alpha=0.25, gamma=2.0):
    """BCEWithLogits(pos_weight) then torchvision's focal factor and alpha_t, reduction='mean'."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pos_weight)
    p_t = p * t + (1 - p) * (1 - t)
    return ((alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma).mean()


def _build(name, z0, y, onehot):
    import torch.nn.functional as F

    import tailwise.functional as TF

    if name == "ce":
        return lambda z: F.cross_entropy(z, y)
    if name == "focal":
        return lambda z: TF.focal_loss(z, y, gamma=2.0)
    if name == "focal_textbook":
        return lambda z: _textbook_softmax_focal(z, y, 2.0)
    if name == "bce":
        return lambda z: F.binary_cross_entropy_with_logits(z, onehot)
    if name == "sigmoid_focal":
        return lambda z: TF.sigmoid_focal_loss(z, onehot)
    if name == "sigmoid_focal_textbook":
        return lambda z: _torchvision_sigmoid_focal(z, onehot)
    if name in ("sigmoid_focal_pw", "sigmoid_focal_pw_textbook"):
        import torch

        pw = torch.linspace(0.5, 20.0, z0.shape[1])
        if name == "sigmoid_focal_pw":
            return lambda z: TF.sigmoid_focal_loss(z, onehot, pos_weight=pw)
        return lambda z: _textbook_sigmoid_focal_pos_weight(z, onehot, pw)
    raise ValueError(name)


_CASES = ("ce", "focal", "focal_textbook", "bce", "sigmoid_focal", "sigmoid_focal_textbook", "sigmoid_focal_pw",
          "sigmoid_focal_pw_textbook")


def _median_time_and_peak(run, reps):
    """Median seconds of ``reps`` calls of ``run`` after one warm-up call, and the growth of this
    process's peak RSS (MiB) over the whole measurement (run it in a fresh process)."""
    import resource
    import time

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return sorted(times)[len(times) // 2], peak_mib


def _focal_case(name, n, c, reps):
    """Median forward+backward seconds and peak +RSS (MiB) of one case, in this (fresh) process."""

    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, c, generator=g) * 2
    y = torch.randint(0, c, (n,), generator=g)
    onehot = F.one_hot(y, c).float() if "sigmoid" in name or name == "bce" else None
    fn = _build(name, z0, y, onehot)
    z = z0.clone().requires_grad_(True)

    def run():
        z.grad = None
        fn(z).backward()

    return _median_time_and_peak(run, reps)


def _run_in_subprocess(func_name, name, n, c, reps):
    import json
    import subprocess
    import sys

    code = (f"import json, sys; sys.path.insert(0, {repr(__file__.rsplit('/', 1)[0])}); "
            f"from classification import {func_name}; "
            f"print(json.dumps({func_name}({name!r}, {n}, {c}, {reps})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def focal_rows(n=65536, c=1000, reps=3):
    """Print softmax focal vs F.cross_entropy / textbook, sigmoid focal vs BCE / torchvision's formula."""
    label = {"ce": "F.cross_entropy", "focal": "tailwise focal_loss (fused)",
             "focal_textbook": "textbook softmax focal (autograd)",
             "bce": "F.binary_cross_entropy_with_logits", "sigmoid_focal": "tailwise sigmoid_focal_loss",
             "sigmoid_focal_textbook": "torchvision formula (autograd)",
             "sigmoid_focal_pw": "tailwise sigmoid_focal, pos_weight", "sigmoid_focal_pw_textbook":
             "BCE(pos_weight) * focal (autograd)"}
    for title, names, ref in [("softmax focal (gamma=2)", ("ce", "focal", "focal_textbook"), "ce"),
                              ("sigmoid focal (alpha=0.25, gamma=2), one-hot targets",
                               ("bce", "sigmoid_focal", "sigmoid_focal_textbook"), "sigmoid_focal_textbook"),
                              ("sigmoid focal with pos_weight (C,) (torch Function), one-hot targets",
                               ("sigmoid_focal", "sigmoid_focal_pw", "sigmoid_focal_pw_textbook"),
                               "sigmoid_focal_pw_textbook")]:
        res = {name: _run_in_subprocess("_focal_case", name, n, c, reps) for name in names}
        print(f"\n{title}, N={n}, C={c}, forward+backward (median of {reps}), float32 CPU")
        print(f"{'implementation':<36}{'time [s]':>10}{'x ' + ref:>34}{'peak +RSS [MiB]':>17}")
        for name, (t, mem) in res.items():
            print(f"{label[name]:<36}{t:>10.3f}{t / res[ref][0]:>34.2f}{mem:>17.0f}")


# ============================================================================================
# Equalization Losses (EQLv2) rows -- maintained with src/tailwise/classification/eqlv2.py
# ============================================================================================
def _eqlv2_case(name, n, c, reps):
    """Median forward+backward seconds of one implementation (run inside a fresh subprocess)."""

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

    return _median_time_and_peak(run, reps)


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
    parser.add_argument("--only", default="all", choices=["all", "focal", "eqlv2"], help="which table to print")
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--c", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the subprocesses")
    args = parser.parse_args()
    if args.threads:
        import os
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.only in ("all", "focal"):
        focal_rows(args.n, args.c, args.reps)
    # ---- Equalization Losses rows (maintained with classification/eqlv2.py) ----
    if args.only in ("all", "eqlv2"):
        equalization_rows(args.n, args.c, args.reps)
