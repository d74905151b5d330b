"""SupCon forward+backward: tailwise's fused, row-chunked kernel vs the published reference algorithm.

The reference is SupContrast's ``SupConLoss`` algorithm (github HobbitLong/SupContrast,
``losses.py``) re-typed here: dense float ``(VN, VN)`` masks (``mask.repeat``, ``scatter`` for the
self mask), a max-subtraction, then separate ``exp`` / ``log`` / masked-sum passes, all recorded by
autograd.

Method: every (implementation, N) runs in a fresh subprocess (so allocator caches and earlier
peaks do not leak between configurations). Peak memory is the growth of the process's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) over the baseline taken after the
inputs are built and torch is warmed up (a tiny forward+backward), during one forward+backward.
Time is the median wall time of ``--repeats`` further forward+backward passes.

    python benchmarks/contrastive.py                      # N in 512 2048 8192, V=2, D=128, float32
    python benchmarks/contrastive.py --sizes 2048 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def reference_supcon(features, labels, temperature=0.07, base_temperature=0.07):
    import torch
    bsz = features.shape[0]
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float()
    cc = features.shape[1]
    cf = torch.cat(torch.unbind(features, dim=1), dim=0)
    adc = torch.div(torch.matmul(cf, cf.T), temperature)
    logits_max, _ = torch.max(adc, dim=1, keepdim=True)
    logits = adc - logits_max.detach()
    mask = mask.repeat(cc, cc)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(bsz * cc).view(-1, 1), 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mpp = mask.sum(1)
    mpp = torch.where(mpp < 1e-6, torch.ones_like(mpp), mpp)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mpp
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.view(cc, bsz).mean()


def worker(impl: str, n: int, views: int, dim: int, repeats: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    from tailwise.functional import supcon_loss
    fn = reference_supcon if impl == "reference" else supcon_loss
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(n, views, dim, generator=g), dim=-1)
    labels = torch.randint(0, 100, (n,), generator=g)
    small = feats[:8].clone().requires_grad_()
    fn(small, labels[:8]).backward()  # warm-up: lazy init, thread pools
    x = feats.clone().requires_grad_()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = fn(x, labels)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    value = float(loss)
    times = []
    for _ in range(repeats):
        x.grad = None
        t0 = time.perf_counter()
        fn(x, labels).backward()
        times.append(time.perf_counter() - t0)
    return {"impl": impl, "n": n, "time_ms": 1e3 * statistics.median(times), "peak_mib": peak / 1024, "loss": value}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        impl, n = args.worker
        print(json.dumps(worker(impl, int(n), args.views, args.dim, args.repeats, args.threads)))
        return
    print(f"SupCon forward+backward, V={args.views}, D={args.dim}, float32, CPU, {args.threads} threads; "
          f"peak = growth of ru_maxrss in a fresh process")
    print(f"| N | reference ms | tailwise ms | speed-up | reference peak MiB | tailwise peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        res = {}
        for impl in ("reference", "tailwise"):
            cmd = [sys.executable, __file__, "--worker", impl, str(n), "--views", str(args.views), "--dim",
                   str(args.dim), "--repeats", str(args.repeats), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                res[impl] = None
                print(f"# {impl} N={n} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            else:
                res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        r, t = res["reference"], res["tailwise"]
        if r and t and abs(r["loss"] - t["loss"]) > 1e-3 * max(1.0, abs(r["loss"])):
            print(f"# WARNING: losses differ at N={n}: {r['loss']} vs {t['loss']}", file=sys.stderr)
        fmt = lambda d, k: f"{d[k]:.1f}" if d else "failed"  # noqa: E731
        speed = f"{r['time_ms'] / t['time_ms']:.2f}x" if r and t else "-"
        mem = f"{t['peak_mib'] / max(r['peak_mib'], 1e-9):.3f}" if r and t else "-"
        print(f"| {n} | {fmt(r, 'time_ms')} | {fmt(t, 'time_ms')} | {speed} | {fmt(r, 'peak_mib')} | "
              f"{fmt(t, 'peak_mib')} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
