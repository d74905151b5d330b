"""Speed and peak memory of the regression losses vs their textbook eager formulations.

For each loss, batch size and target dimension (1-D and 3-D) this times forward + backward
(median of ``--reps`` runs after warm-up, 1 thread by default) of tailwise's loss and of the
"textbook" version written the way the official Balanced MSE code writes it
(``imdb-wiki-dir/balanaced_mse.py`` for 1-D, ``MultivariateNormal`` log-densities as in
``synthetic_benchmark/loss.py`` for D-dim; issue #4's ``bmc_loss_l1`` for balanced L1;
``torch.nn.functional`` for L1/MSE/smooth L1).

Peak memory: each (loss, implementation, dim) runs in a fresh subprocess over increasing batch
sizes; the reported number is the growth of the process's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its value after setup, i.e. the extra
memory the forward+backward needed (CPU; includes allocator slack). Because sizes increase,
the peak of each size is measured by its own run.

    python benchmarks/regression.py                 # full table (~1-2 min on 2 cores)
    python benchmarks/regression.py --sizes 256,1024 --no-memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal as MVN

import tailwise.functional as TF

LOSSES = ("l1", "mse", "smooth_l1", "bmc", "gai", "bni", "balanced_l1")
K_GMM, BINS = 8, 100


def _stats(d):
    g = torch.Generator().manual_seed(0)
    means = torch.randn(K_GMM, d, generator=g)
    a = torch.randn(K_GMM, d, d, generator=g)
    covs = a @ a.transpose(1, 2) / d + 0.2 * torch.eye(d)
    weights = torch.rand(K_GMM, generator=g) + 0.1
    weights = weights / weights.sum()
    centers = torch.randn(BINS, d, generator=g)
    bw = torch.rand(BINS, generator=g) + 0.1
    return means, covs, weights, centers, bw / bw.sum()


def textbook(name, pred, target, sigma, st):
    means, covs, weights, centers, bw = st
    d = pred.shape[1]
    var = sigma ** 2
    eye = torch.eye(d)
    if name == "l1":
        return F.l1_loss(pred, target)
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if name == "bmc":
        if d == 1:
            logits = -0.5 * (pred - target.T).pow(2) / var
        else:
            logits = MVN(pred.unsqueeze(1), var * eye).log_prob(target.unsqueeze(0))
        return F.cross_entropy(logits, torch.arange(pred.shape[0])) * (2 * var).detach()
    if name == "balanced_l1":
        logits = -torch.cdist(pred, target, p=1) / sigma if d > 1 else -(pred - target.T).abs() / sigma
        return F.cross_entropy(logits, torch.arange(pred.shape[0])) * sigma.detach()
    if name == "gai":
        if d == 1:
            n = pred.shape[0]
            m, v, w = (x.reshape(1, -1).expand(n, -1) for x in (means[:, 0], covs[:, 0, 0], weights))
            mse = F.mse_loss(pred, target, reduction="none") / 2 / var + 0.5 * var.log()
            s = v + var
            bal = torch.logsumexp(-0.5 * s.log() - 0.5 * (pred - m).pow(2) / s + w.log(), -1, keepdim=True)
        else:
            mse = -MVN(pred, var * eye).log_prob(target)
            bal = torch.logsumexp(MVN(means, covs + var * eye).log_prob(pred.unsqueeze(1)) + weights.log(), 1)
        return ((mse + bal) * (2 * var).detach()).mean()
    if name == "bni":
        mse = F.mse_loss(pred, target, reduction="none").sum(-1, keepdim=True) / 2 / var
        n = pred.shape[0]
        diff = (pred.unsqueeze(1) - centers.unsqueeze(0).expand(n, -1, -1)).pow(2).sum(-1)
        bal = torch.logsumexp(-0.5 * diff / var + bw.log().unsqueeze(0).repeat(n, 1), -1, keepdim=True)
        return ((mse + bal) * (2 * var).detach()).mean()
    raise ValueError(name)


def ours(name, pred, target, sigma, st):
    means, covs, weights, centers, bw = st
    if name in ("l1", "mse", "smooth_l1"):
        return getattr(TF, f"{name}_loss")(pred, target)
    if name == "bmc":
        return TF.bmc_loss(pred, target, sigma)
    if name == "balanced_l1":
        return TF.balanced_l1_loss(pred, target, sigma)
    if name == "gai":
        return TF.gai_loss(pred, target, sigma, means, covs, weights)
    if name == "bni":
        return TF.bni_loss(pred, target, sigma, centers, bw)
    raise ValueError(name)


def _inputs(n, d):
    g = torch.Generator().manual_seed(n + d)
    pred = torch.randn(n, d, generator=g).requires_grad_(True)
    target = torch.randn(n, d, generator=g)
    sigma = torch.tensor(0.8, requires_grad=True)
    return pred, target, sigma


def time_one(fn, name, n, d, st, reps):
    pred, target, sigma = _inputs(n, d)

    def step():
        loss = fn(name, pred, target, sigma, st)
        loss.backward()
        pred.grad = sigma.grad = None

    for _ in range(2):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def memory_child(impl, name, d, sizes):
    """Runs in a subprocess: peak-RSS growth per size (MiB)."""
    torch.set_num_threads(1)
    fn = ours if impl == "ours" else textbook
    st = _stats(d)
    _inputs(8, d)
    fn(name, *_inputs(8, d), st).backward()  # import/allocator warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {}
    for n in sizes:
        pred, target, sigma = _inputs(n, d)
        fn(name, pred, target, sigma, st).backward()
        out[n] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024.0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,1024,4096,8192")
    ap.add_argument("--dims", default="1,3")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        impl, name, d, _ = args.child
        print(json.dumps(memory_child(impl, name, int(d), sizes)))
        return
    torch.set_num_threads(args.threads)
    dims = [int(x) for x in args.dims.split(",")]
    losses = args.losses.split(",")
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}; memory = peak RSS growth (MiB)")
    print(f"{'loss':<12}{'D':>2}{'N':>6} | {'ours ms':>8} {'textbook ms':>11} {'ratio':>6} | {'ours MiB':>8} {'textbook MiB':>12}")
    worst = 0.0
    for name in losses:
        for d in dims:
            mem = {}
            if not args.no_memory:
                for impl in ("ours", "textbook"):
                    res = subprocess.run([sys.executable, __file__, "--sizes", args.sizes,
                                          "--child", impl, name, str(d), "x"], capture_output=True, text=True)
                    mem[impl] = {int(k): v for k, v in json.loads(res.stdout).items()} if res.returncode == 0 else {}
            st = _stats(d)
            for n in sizes:
                t_o = time_one(ours, name, n, d, st, args.reps)
                t_t = time_one(textbook, name, n, d, st, args.reps)
                ratio = t_o / t_t
                worst = max(worst, ratio)
                mo = mem.get("ours", {}).get(n, float("nan"))
                mt = mem.get("textbook", {}).get(n, float("nan"))
                print(f"{name:<12}{d:>2}{n:>6} | {t_o * 1e3:>8.3f} {t_t * 1e3:>11.3f} {ratio:>6.2f} | {mo:>8.1f} {mt:>12.1f}",
                      flush=True)
    print(f"worst time ratio ours/textbook: {worst:.2f}")


if __name__ == "__main__":
    main()
