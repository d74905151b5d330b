"""Tuning run of the classification kernels on a GPU (see NOTES-gpu-classification.md).

PART=check: Triton vs torch path (value rel <= 1e-5, grad rel <= 1e-4); PART=full|softmax: fwd+bwd
times and peak memory of the losses on both backends; PART=tune: kernel times of the sigmoid
kernels at the launch defaults (set TAILWISE_SIGMOID_TUNE to try others); PART=all: everything.
Run: PYTHONPATH=src python benchmarks/tune_classification_kernels.py
"""
import os
import time

import torch
import triton
from triton.testing import do_bench

import tailwise.functional as TF
from tailwise.kernels import backend
from tailwise.kernels import _sigmoid_triton as S
from tailwise.classification.eqlv2 import eqlv2_loss
from tailwise.classification.equalized_focal import equalized_focal_loss
import torch.nn.functional as F

dev = "cuda"
PART = os.environ.get("PART", "all")
ROWS = []

def bench(fn, rep=60, warmup=15):
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")

def fb(loss_fn, x):
    def f():
        x.grad = None
        loss_fn(x).backward()
    return f

def peak(f):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    f(); torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20

def counts(c):
    return torch.tensor([max(1, round(1000 * (k + 1) ** -0.67)) for k in range(c)], dtype=torch.float64, device=dev)

def sig_losses(c):
    g = torch.Generator(device="cpu").manual_seed(0)
    pos = torch.rand(c, generator=g).to(dev); neg = torch.rand(c, generator=g).add_(1).to(dev)
    cnt = counts(c)
    return {
        "sigmoid_focal": lambda x, y, t: TF.sigmoid_focal_loss(x, t),
        "bal_bce": lambda x, y, t: TF.bal_bce_loss(x, y, cnt),
        "cb_focal": lambda x, y, t: TF.class_balanced_loss(x, y, cnt, loss_type="focal"),
        "eqlv2": lambda x, y, t: eqlv2_loss(x, y, pos, neg),
        "efl": lambda x, y, t: equalized_focal_loss(x, y, pos, neg),
    }

def sig_data(n, c, dt=torch.float32):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n, c, generator=g).sub_(2).to(device=dev, dtype=dt).requires_grad_()
    y = torch.randint(0, c, (n,), generator=g).to(dev)
    t = F.one_hot(y, c).to(dt)
    return x, y, t

def check_sig(tag):
    worst = 0.0
    for n, c in [(3001, 1203), (4099, 80)]:
        x, y, t = sig_data(n, c)
        for name, fn in sig_losses(c).items():
            res = {}
            for be in ("torch", "triton"):
                x.grad = None
                with backend(be):
                    v = fn(x, y, t); v.backward()
                res[be] = (v.detach().double(), x.grad.detach().double().clone())
            (v0, g0), (v1, g1) = res["torch"], res["triton"]
            ev = float((v1 - v0).abs().max() / v0.abs().max().clamp_min(1e-30))
            eg = float((g1 - g0).abs().max() / g0.abs().max().clamp_min(1e-30))
            ok = ev <= 1e-5 and eg <= 1e-4
            if not ok:
                print(f"  MISMATCH {tag} {n}x{c} {name}: value rel {ev:.2e} grad rel {eg:.2e}")
            worst = max(worst, ev, eg * 0.1)
    print(f"check {tag}: worst value-rel/0.1*grad-rel {worst:.2e}")

def kernel_times(n, c, tag, fwd_only=False, bwd_only=False):
    """fwd and bwd kernels alone, eqlv2 flags (class indices, P/Q) and focal dense flags."""
    x, y, t = sig_data(n, c)
    xd = x.detach()
    pos = torch.rand(c, device=dev); neg = torch.rand(c, device=dev) + 1
    go_r = torch.ones(n, device=dev); go_e = torch.ones(())
    out = {}
    if not bwd_only: out["eql_fwd"] = bench(lambda: S._launch_fwd(xd, y, None, pos, neg, None, 1.0, 0.0, -1.0, 0.0, True))
    if not fwd_only: out["eql_bwd"] = bench(lambda: S._launch_bwd(go_r, xd, y, None, pos, neg, None, 1.0, 0.0, -1.0, 0.0))
    gv = torch.rand(c, device=dev) * 2
    if not bwd_only: out["efl_fwd"] = bench(lambda: S._launch_fwd(xd, y, None, pos, pos, gv, 1.0, 0.0, -1.0, 0.0, True))
    if not fwd_only: out["efl_bwd"] = bench(lambda: S._launch_bwd(go_r, xd, y, None, pos, pos, gv, 1.0, 0.0, -1.0, 0.0))
    tf = t.float()
    if not bwd_only: out["foc_fwd"] = bench(lambda: S._launch_fwd(xd, tf, None, None, None, None, 1.0, 0.0, 0.25, 2.0, True))
    if not fwd_only: out["foc_bwd"] = bench(lambda: S._launch_bwd(go_r, xd, tf, None, None, None, None, 1.0, 0.0, 0.25, 2.0))
    return out

def part_sigmoid():
    table = []
    for n, c in [(200_000, 1203), (1_000_000, 80)]:
        kt = kernel_times(n, c, "")
        table.append((f"{n}x{c}", "DEFAULT", {k: round(v, 3) for k, v in kt.items()})); print(table[-1], flush=True)
    return table

def full_sig(label):
    rows = []
    for n, c in [(200_000, 1203), (1_000_000, 80)]:
        x, y, t = sig_data(n, c)
        for name, fn in sig_losses(c).items():
            for be in ("torch", "triton"):
                with backend(be):
                    f = fb(lambda z: fn(z, y, t), x)
                    ms = bench(f, rep=40, warmup=10)
                    mem = peak(f)
                rows.append((label, f"{n}x{c}", name, be, round(ms, 3), round(mem)))
        del x, y, t
        torch.cuda.empty_cache()
    return rows

def full_softmax(label):
    rows = []
    n, c = 65536, 1000
    for dt in (torch.float32, torch.bfloat16):
        g = torch.Generator(device="cpu").manual_seed(0)
        z = torch.randn(n, c, generator=g).mul_(2).to(device=dev, dtype=dt).requires_grad_()
        y = torch.randint(0, c, (n,), generator=g).to(dev)
        cnt = counts(c)
        losses = {
            "F.cross_entropy": (lambda x: F.cross_entropy(x.float() if x.dtype != torch.float32 else x, y), None),
            "cross_entropy": (lambda x: TF.cross_entropy_loss(x, y), 1),
            "focal": (lambda x: TF.focal_loss(x, y, gamma=2.0), 1),
            "balanced_softmax": (lambda x: TF.balanced_softmax_loss(x, y, cnt), 1),
            "logit_adjusted": (lambda x: TF.logit_adjusted_loss(x, y, cnt, tau=0.5), 1),
            "class_balanced": (lambda x: TF.class_balanced_loss(x, y, cnt, loss_type="softmax"), 1),
        }
        for name, (fn, both) in losses.items():
            for be in (("torch", "triton") if both else ("auto",)):
                with backend(be):
                    f = fb(fn, z)
                    ms = bench(f, rep=40, warmup=10)
                    mem = peak(f)
                    # CPU cost per call: 30 calls queued, one sync
                    torch.cuda.synchronize(); t0 = time.perf_counter()
                    for _ in range(30): f()
                    cpu = (time.perf_counter() - t0) / 30 * 1e3
                    torch.cuda.synchronize()
                rows.append((label, str(dt).split('.')[-1], name, be, round(ms, 3), round(mem), round(cpu, 3)))
        if dt == torch.float32:
            from tailwise.kernels import _softmax_ce_triton as K
            from tailwise.kernels.softmax_ce import softmax_cross_entropy
            xd = z.detach()
            def raw():
                loss, lse, k = K._launch_fwd(xd, y, None, None, None, None, 0.0, 0.0, -100)
                K._launch_bwd(torch.full_like(loss, 1.0 / n), xd, y, lse, k, None, None, None, None, 0.0, -100)
            rows.append((label, "f32", "raw launch fwd+bwd", "-", round(bench(raw), 3), 0, 0))
            def op():
                z.grad = None
                softmax_cross_entropy(z, y).mean().backward()
            rows.append((label, "f32", "softmax_cross_entropy().mean() fwd+bwd", "-", round(bench(op), 3), 0, 0))
            torch.cuda.synchronize(); t0 = time.perf_counter()
            for _ in range(30): op()
            rows.append((label, "f32", "  cpu per call", "-", round((time.perf_counter() - t0) / 30 * 1e3, 3), 0, 0))
            torch.cuda.synchronize()
        del z
        torch.cuda.empty_cache()
    return rows

if __name__ == "__main__":
    print(torch.__version__, triton.__version__, torch.cuda.get_device_name())
    label = os.environ.get("LABEL", "new")
    if PART in ("all", "check"):
        check_sig("default")
    rows = []
    if PART in ("all", "full", "old"):
        rows += full_sig(label)
    if PART in ("all", "softmax", "old"):
        rows += full_softmax(label)
    for r in rows:
        print("ROW", *r, flush=True)
    if PART in ("all", "tune"):
        t = part_sigmoid()
