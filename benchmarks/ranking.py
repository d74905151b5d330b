"""Forward+backward time and peak memory of tailwise's ranking losses vs the PyPI peer
``imbalanced-losses`` (0.6.0) and vs a textbook dense eager formulation.

    python benchmarks/ranking.py                    # N=4096, C=10, 1024-row queue
    PYTHONPATH=/path/with/imbalanced_losses python benchmarks/ranking.py

The peer is optional: install it only in a scratch environment (``pip install --no-deps
imbalanced-losses==0.6.0``); when it is not importable its rows are skipped with a message.
Both libraries get a queue already filled with ``--queue`` rows, the same logits and labels,
and the settings that match: Smooth-AP tau=0.01; recall above the 0.995 quantile (the peer's
``quantile=0.005``) with tau=0.05; pAUC over FPR [0, 0.01] with the pairwise sigmoid
surrogate and tau=0.1 (the peer's ``surrogate="pairwise"``; its temperature is scaled by the
negatives' IQR, a detail that does not change the cost).

Time: median of ``--repeats`` forward+backward calls (interleaved between implementations).
Peak memory: each (implementation, loss) runs in a fresh subprocess; after the queue is filled
the peak-RSS mark is reset (``/proc/self/clear_refs``) and the growth of ``VmHWM`` over the
current RSS during one forward+backward is reported (falls back to ``ru_maxrss`` growth where
``/proc`` is unavailable), i.e. the extra host memory the loss's call needs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

LOSSES = ("smooth_ap", "recall_at_quantile", "pauc_at_budget")


def _peer_available() -> bool:
    try:
        import imbalanced_losses  # noqa: F401
    except ImportError:
        return False
    return True


def _textbook_smooth_ap(logits, target, tau=0.01):
    """Dense O(M^2) per-class Smooth-AP as the paper's equations read (no queue)."""
    losses = []
    for c in range(logits.shape[1]):
        s = logits[:, c]
        pos = target == c
        if not pos.any():
            continue
        sig = torch.sigmoid((s.unsqueeze(0) - s.unsqueeze(1)) / tau)
        sig = sig * (1 - torch.eye(s.numel()))
        r_all = 1 + sig.sum(1)
        r_pos = 1 + (sig * pos.float().unsqueeze(0)).sum(1)
        losses.append(1 - (r_pos[pos] / r_all[pos]).mean())
    return torch.stack(losses).mean()


def _make(impl: str, loss: str, c: int, queue: int):
    if impl == "tailwise":
        import tailwise
        kw = {"num_classes": c, "queue_size": queue}
        if loss == "smooth_ap":
            return tailwise.SmoothAPLoss(0.01, **kw)
        if loss == "recall_at_quantile":
            return tailwise.RecallAtQuantileLoss(0.995, 0.05, **kw)
        return tailwise.PAUCAtBudgetLoss(0.0, 0.01, 0.1, **kw)
    if impl == "peer":
        import imbalanced_losses as il
        kw = {"num_classes": c, "queue_size": queue, "gather_distributed": False}
        if loss == "smooth_ap":
            return il.SmoothAPLoss(temperature=0.01, **kw)
        if loss == "recall_at_quantile":
            return il.RecallAtQuantileLoss(quantile=0.005, temperature=0.05, **kw)
        return il.PAUCAtBudgetLoss(alpha=0.0, beta=0.01, temperature=0.1, surrogate="pairwise", **kw)
    if impl == "textbook" and loss == "smooth_ap":
        return _textbook_smooth_ap
    return None


def _data(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def _prime(fn, n, c, queue):
    if isinstance(fn, torch.nn.Module):
        fn.train()
        for i in range(-(-queue // n) + 1):  # fill the queue
            x, y = _data(n, c, 100 + i)
            fn(x, y)


def _call(fn, x, y):
    x = x.clone().requires_grad_(True)
    fn(x, y).backward()


def _memory(impl, loss, n, c, queue):
    """Run in a subprocess: growth of peak RSS (MiB) over one forward+backward."""
    fn = _make(impl, loss, c, 0 if impl == "textbook" else queue)
    if isinstance(fn, torch.nn.Module) and queue:  # fill the queue with one small batch so the
        fn.train()                                  # measured call is the first big one
        fn(*_data(queue, c, 100))
    x, y = _data(n, c, 0)
    import gc
    gc.collect()
    # reset the peak-RSS mark (Linux: writing 5 to clear_refs resets VmHWM) so that the import
    # of torch and the queue priming do not hide the call's own peak
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _vm("VmRSS")
        _call(fn, x, y)
        return (_vm("VmHWM") - before) / 1024.0
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _call(fn, x, y)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0


def _vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    raise OSError(field)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--queue", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--_mem", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._mem:
        print(json.dumps(_memory(args._mem[0], args._mem[1], args.n, args.classes, args.queue)))
        return
    impls = ["tailwise"]
    if _peer_available():
        import imbalanced_losses
        impls.append("peer")
        print(f"peer: imbalanced_losses {getattr(imbalanced_losses, '__version__', '0.6.0')} from "
              f"{imbalanced_losses.__file__}")
    else:
        print("peer imbalanced-losses is not importable: its rows are skipped "
              "(pip install --no-deps imbalanced-losses==0.6.0 in a scratch environment)")
    impls.append("textbook")
    print(f"N={args.n}, C={args.classes}, queue={args.queue}, threads={args.threads}, "
          f"median of {args.repeats} forward+backward calls\n")
    rows = []
    for loss in LOSSES:
        fns = {}
        for impl in impls:
            fn = _make(impl, loss, args.classes, 0 if impl == "textbook" else args.queue)
            if fn is not None:
                _prime(fn, args.n, args.classes, args.queue)
                fns[impl] = fn
        x, y = _data(args.n, args.classes, 0)
        times = {k: [] for k in fns}
        for _ in range(2):
            for k, fn in fns.items():
                _call(fn, x, y)
        for _ in range(args.repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                _call(fn, x, y)
                times[k].append(time.perf_counter() - t0)
        for k in fns:
            mem = float("nan")
            if not args.no_memory:
                out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--classes", str(args.classes),
                                      "--queue", str(args.queue), "--threads", str(args.threads), "--_mem", k, loss],
                                     capture_output=True, text=True)
                if out.returncode == 0:
                    mem = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((loss, k, statistics.median(times[k]) * 1e3, mem))
    print(f"| loss | implementation | fwd+bwd ms (median) | peak RSS growth MiB |")
    print("|---|---|---:|---:|")
    for loss, k, ms, mem in rows:
        note = " (dense, no queue)" if k == "textbook" else ""
        print(f"| {loss} | {k}{note} | {ms:.2f} | {mem:.1f} |")
    for loss in LOSSES:
        r = {k: ms for l2, k, ms, _ in rows if l2 == loss}
        if "peer" in r:
            print(f"{loss}: tailwise / peer time = {r['tailwise'] / r['peer']:.2f}")


if __name__ == "__main__":
    main()
