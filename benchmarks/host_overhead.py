"""Host-side work per call of the hot losses on the Triton path, next to their textbook torch form.

Not a test: run ``python benchmarks/host_overhead.py`` (CPU only; ``--json PATH`` also writes the
rows, ``--repeat N`` sets the timing calls, ``--only NAME,...`` restricts the rows).

Why: on a GPU an eager loss call is host-bound when the kernels are short: every aten op that
the Python front-end dispatches costs a dispatcher trip and, on CUDA, a kernel launch or an
allocation (~5-10 us of CPU each), on top of the Python itself. This script counts those ops and
times the host work, on the CPU, so the front-ends can be slimmed without a GPU.

Method
------
* **The Triton path on the CPU.** ``TRITON_INTERPRET=1`` is set before Triton is imported and the
  kernel backend is forced to ``"triton"``, so every loss takes exactly the code path it takes on
  CUDA: the same front-end, validation, per-class vectors, ``autograd.Function`` and launchers.
  ``tailwise._validation._device_paths()`` is entered too, so value checks and selections take
  their accelerator form (device-side asserts, masking) instead of the eager-CPU form that reads
  values on the host.
* **Counting.** A ``TorchDispatchMode`` counts every aten op dispatched during one forward +
  backward (``loss.backward()`` of the reduced loss). The body of each Triton launch
  (``InterpretedFunction.run``, i.e. the interpreter executing the kernel with numpy) is excluded
  from the count and counted as one *launch* instead: on CUDA it is one kernel. Everything else
  (the launchers' ``torch.empty`` outputs, the front-end's reductions, casts, gathers and checks)
  is what the CUDA path dispatches besides the Triton kernels. Ops are split into *views*
  (``view``/``reshape`` aliases, ``expand``, ``unsqueeze``, ``select``, ``slice``, ``t``,
  ``detach``, ``as_strided``...: metadata only, no launch and no allocation) and *work* (every
  other op: a kernel launch or at least an allocation on CUDA). Autograd's own accumulation of
  the gradient into ``.grad`` (one op on first backward) is counted like any other op.
* **Textbook rows** are the plain torch formulation of the same formula (``F.cross_entropy``,
  ``F.cross_entropy(z + log prior)``, torchvision's sigmoid focal formula, one-hot Dice, the
  SupContrast algorithm, ...), counted the same way (no launches: every op is a launch).
* **Host time** (us per forward + backward) is the median wall time of one call on tiny CPU
  tensors (the smallest median of 5 blocks of ``repeat / 5`` calls: load from other processes
  only adds time) with the Triton launches skipped (after a warm-up call that ran them: the outputs of
  a skipped launch keep what ``torch.empty`` held; validity flags start at 1 and only a kernel
  clears them, so the device-side asserts pass; the stub's own time is subtracted). Timing *around* interpreted
  launches instead is biased (the interpreter leaves the process slower for ~1 ms after each
  launch). It includes the CPU ops' own (tiny) compute and excludes what a real Triton launch
  costs on the host on CUDA (Triton's Python launcher: roughly 10-40 us per launch, not
  modelled here). Timings on a shared CPU are noisy; the op counts are exact.

Caveat: a few aten ops behave differently on CPU and CUDA; e.g. ``F.one_hot`` checks its range
on CPU only (``aminmax`` + two ``_local_scalar_dense``, in the EFL row: its training statistics'
one-hot), so that row over-counts what CUDA dispatches by three.

The loss modules are built once (as in training: ``class_counts`` become buffers); the
functional column calls the functional with host ``class_counts`` lists (the per-device cache
path). One warm-up call fills the per-device caches before counting and timing.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from collections import Counter

os.environ["TRITON_INTERPRET"] = "1"   # before anything imports triton

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import tailwise  # noqa: E402
import tailwise.functional as TF  # noqa: E402
from tailwise._validation import _device_paths  # noqa: E402
from tailwise.kernels import set_backend  # noqa: E402

_VIEW_OPS = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "unsqueeze", "squeeze", "select", "slice",
    "t", "transpose", "permute", "detach", "as_strided", "alias", "unbind", "split", "chunk", "narrow",
    "view_as", "expand_as", "diagonal", "unflatten", "flatten", "lift_fresh", "_to_copy_noop",
}


class _State:
    paused = 0
    launches = 0
    launch_time = 0.0
    skip_launches = False
    legacy_flags = False


class OpCounter(TorchDispatchMode):
    """Counts aten ops (by overload packet name) outside interpreted Triton launches."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not _State.paused:
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def views(self) -> int:
        return sum(n for k, n in self.ops.items() if k in _VIEW_OPS)

    @property
    def work(self) -> int:
        return sum(n for k, n in self.ops.items() if k not in _VIEW_OPS)


def _install_launch_hook() -> None:
    from triton.runtime.interpreter import InterpretedFunction
    if getattr(InterpretedFunction.run, "_host_overhead_hook", False):
        return
    orig = InterpretedFunction.run

    def run(self, *args, **kwargs):
        _State.launches += 1
        _State.paused += 1
        t0 = time.perf_counter()
        try:
            if _State.skip_launches:
                # timing: the kernel is not run (its outputs keep whatever torch.empty held; the
                # validity flags start at 1 = valid and a kernel only ever clears them)
                if _State.legacy_flags:
                    # code before that: per-program int32 counts of bad items, written by the kernel
                    for a in args:
                        if isinstance(a, torch.Tensor) and a.dtype == torch.int32:
                            a.zero_()
                return None
            return orig(self, *args, **kwargs)
        finally:
            _State.launch_time += time.perf_counter() - t0
            _State.paused -= 1

    run._host_overhead_hook = True
    InterpretedFunction.run = run


# ----------------------------------------------------------------------------- inputs
N, C = 16, 7
COUNTS = [max(1, round(1000 * (k + 1) ** -1.2)) for k in range(C)]
CW = [0.5 + 0.25 * k for k in range(C)]


def _gen():
    return torch.Generator().manual_seed(0)


def _logits(n=N, c=C):
    g = _gen()
    return torch.randn(n, c, generator=g).mul_(2).requires_grad_(True), torch.randint(0, c, (n,), generator=g)


def _seg(n=2, c=4, s=6):
    g = _gen()
    return torch.randn(n, c, s, s, generator=g).requires_grad_(True), torch.randint(0, c, (n, s, s), generator=g)


def _boxes(n=32):
    g = _gen()
    xy = torch.rand(n, 2, generator=g) * 10
    wh = torch.rand(n, 2, generator=g) * 5 + 0.5
    p = torch.cat([xy, xy + wh], 1).requires_grad_(True)
    xy2 = xy + torch.randn(n, 2, generator=g) * 0.5
    t = torch.cat([xy2, xy2 + wh * 1.1], 1)
    return p, t


def _views(n=12, v=2, d=8, c=3):
    g = _gen()
    f = F.normalize(torch.randn(n, v, d, generator=g), dim=-1).requires_grad_(True)
    return f, torch.randint(0, c, (n,), generator=g)


def _log_prior(c=C):
    cnt = torch.tensor(COUNTS[:c], dtype=torch.float64)
    return torch.log(cnt / cnt.sum()).float()


# ----------------------------------------------------------------------------- textbook formulations
def _tb_focal(z, y, gamma=2.0):
    logp = F.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    return (-(1 - logp.exp()).pow(gamma) * logp).mean()


def _tb_sigmoid_focal(x, t, alpha=0.25, gamma=2.0):
    # torchvision.ops.sigmoid_focal_loss
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def _tb_cb_weights(beta=0.99):
    cnt = torch.tensor(COUNTS, dtype=torch.float64)
    w = (1 - beta) / (1 - beta ** cnt)
    return (w / w.sum() * C).float()


def _tb_dice(z, y, eps=1e-5):
    p = torch.softmax(z, 1)
    oh = F.one_hot(y, z.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dims = (2, 3)
    inter = (p * oh).sum(dims)
    den = p.sum(dims) + oh.sum(dims)
    return (1 - (2 * inter + eps) / (den + eps)).mean()


def _tb_tversky(z, y, a=0.3, b=0.7, eps=1e-5):
    p = torch.softmax(z, 1)
    oh = F.one_hot(y, z.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dims = (2, 3)
    tp = (p * oh).sum(dims)
    fp = (p * (1 - oh)).sum(dims)
    fn = ((1 - p) * oh).sum(dims)
    return (1 - (tp + eps) / (tp + a * fp + b * fn + eps)).mean()


def _tb_focal_tversky(z, y, a=0.3, b=0.7, gamma=0.75, eps=1e-5):
    p = torch.softmax(z, 1)
    oh = F.one_hot(y, z.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dims = (2, 3)
    tp = (p * oh).sum(dims)
    fp = (p * (1 - oh)).sum(dims)
    fn = ((1 - p) * oh).sum(dims)
    return ((1 - (tp + eps) / (tp + a * fp + b * fn + eps)) ** gamma).mean()


def _tb_generalized_dice(z, y, eps=1e-5):
    # MONAI's GeneralizedDiceLoss (w = 1/|g|^2, empty classes take the image's largest weight)
    p = torch.softmax(z, 1)
    oh = F.one_hot(y, z.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dims = (2, 3)
    inter = (p * oh).sum(dims)
    sy = oh.sum(dims)
    w = 1.0 / (sy * sy)
    inf = torch.isinf(w)
    w = torch.where(inf, torch.zeros_like(w), w)
    w = torch.where(inf, w.amax(1, keepdim=True), w)
    numer = 2.0 * (w * inter).sum(1) + eps
    denom = (w * (p.sum(dims) + sy)).sum(1) + eps
    return (1 - numer / denom).mean()


def _tb_giou(p, t, eps=1e-7):
    # torchvision.ops.generalized_box_iou_loss
    x1, y1, x2, y2 = p.unbind(-1)
    x1g, y1g, x2g, y2g = t.unbind(-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    inter = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    inter[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    return (1 - (iou - ((area_c - union) / (area_c + eps)))).mean()


def _tb_diou_terms(p, t, eps=1e-7):
    x1, y1, x2, y2 = p.unbind(-1)
    x1g, y1g, x2g, y2g = t.unbind(-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    inter = (xkis2 - xkis1).clamp_min(0) * (ykis2 - ykis1).clamp_min(0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    diag = (xc2 - xc1) ** 2 + (yc2 - yc1) ** 2 + eps
    cx, cy = (x2 + x1) / 2, (y2 + y1) / 2
    cxg, cyg = (x2g + x1g) / 2, (y2g + y1g) / 2
    dist = (cx - cxg) ** 2 + (cy - cyg) ** 2
    return iou, dist / diag, (x1, y1, x2, y2, x1g, y1g, x2g, y2g)


def _tb_diou(p, t):
    iou, d, _ = _tb_diou_terms(p, t)
    return (1 - iou + d).mean()


def _tb_ciou(p, t, eps=1e-7):
    # torchvision.ops.complete_box_iou_loss
    iou, d, (x1, y1, x2, y2, x1g, y1g, x2g, y2g) = _tb_diou_terms(p, t)
    w_pred, h_pred = x2 - x1, y2 - y1
    w_gt, h_gt = x2g - x1g, y2g - y1g
    v = (4 / (math.pi ** 2)) * torch.pow(torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return (1 - iou + d + alpha * v).mean()


def _tb_supcon(features, labels, temperature=0.07):
    # github HobbitLong/SupContrast losses.py, contrast_mode="all"
    bsz, v = features.shape[:2]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).float()
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = torch.div(contrast @ contrast.T, temperature)
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    mask = mask.repeat(v, v)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(bsz * v).view(-1, 1), 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    pos = mask.sum(1)
    pos = torch.where(pos < 1e-6, torch.ones_like(pos), pos)
    mean_log_prob_pos = (mask * log_prob).sum(1) / pos
    return (-mean_log_prob_pos).view(v, bsz).mean()


def _tb_nt_xent(features, temperature=0.07):
    # SimCLR's NT-Xent in SupContrast's form (labels=None: every sample its own class)
    return _tb_supcon(features, torch.arange(features.shape[0]), temperature)


def _tb_dcl(features, temperature=0.1):
    # Yeh et al. 2022, dense: both directions, the anchor and its positive out of the denominator
    n = features.shape[0]
    z = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool)
    pair = eye.roll(n, 1)
    neg = torch.logsumexp(logits.masked_fill(eye | pair, float("-inf")), 1)
    pos = (features[:, 0] * features[:, 1]).sum(-1) / temperature
    return (neg.view(2, n) - pos).sum(0).mean()


def _tb_eqlv2(z, y):
    # EQLv2 at its initial state (gradient statistics zero): weighted one-hot BCE, weights 1
    t = F.one_hot(y, z.shape[1]).to(z.dtype)
    return F.binary_cross_entropy_with_logits(z, t, reduction="sum") / z.shape[0]


def _tb_bal_bce(z, y):
    t = F.one_hot(y, z.shape[1]).to(z.dtype)
    return F.binary_cross_entropy_with_logits(z + _log_prior(z.shape[1]), t, reduction="sum") / z.shape[0]


# ----------------------------------------------------------------------------- cases
def _case(name, make, module, functional, textbook):
    return dict(name=name, make=make, module=module, functional=functional, textbook=textbook)


def cases():
    lp = _log_prior()
    cbw = _tb_cb_weights()
    cwt = torch.tensor(CW)
    out = [
        _case("cross_entropy", _logits, lambda: tailwise.build_loss("cross_entropy"),
              lambda z, y: TF.cross_entropy_loss(z, y), lambda z, y: F.cross_entropy(z, y)),
        _case("cross_entropy (class_weight)", _logits,
              lambda: tailwise.build_loss("cross_entropy", class_weight=CW),
              lambda z, y: TF.cross_entropy_loss(z, y, class_weight=CW),
              lambda z, y: F.cross_entropy(z, y, weight=cwt)),
        _case("balanced_softmax", _logits, lambda: tailwise.build_loss("balanced_softmax", class_counts=COUNTS),
              lambda z, y: TF.balanced_softmax_loss(z, y, COUNTS), lambda z, y: F.cross_entropy(z + lp, y)),
        _case("logit_adjusted", _logits, lambda: tailwise.build_loss("logit_adjusted", class_counts=COUNTS, tau=1.5),
              lambda z, y: TF.logit_adjusted_loss(z, y, COUNTS, tau=1.5),
              lambda z, y: F.cross_entropy(z + 1.5 * lp, y)),
        _case("focal", _logits, lambda: tailwise.build_loss("focal", gamma=2.0),
              lambda z, y: TF.focal_loss(z, y, gamma=2.0), _tb_focal),
        _case("class_balanced (softmax)", _logits,
              lambda: tailwise.build_loss("class_balanced", class_counts=COUNTS, beta=0.99),
              lambda z, y: TF.class_balanced_loss(z, y, COUNTS, beta=0.99),
              lambda z, y: F.cross_entropy(z, y, weight=cbw, reduction="none").mean()),
        _case("class_balanced (focal)", _logits,
              lambda: tailwise.build_loss("class_balanced", class_counts=COUNTS, beta=0.99, loss_type="focal"),
              lambda z, y: TF.class_balanced_loss(z, y, COUNTS, beta=0.99, loss_type="focal"),
              lambda z, y: (_tb_sigmoid_focal_rows(z, y) * cbw[y]).mean()),
        _case("sigmoid_focal", lambda: _multilabel(), lambda: tailwise.build_loss("sigmoid_focal"),
              lambda x, t: TF.sigmoid_focal_loss(x, t), _tb_sigmoid_focal),
        _case("sigmoid_focal (pos_weight)", lambda: _multilabel(),
              lambda: tailwise.build_loss("sigmoid_focal", pos_weight=torch.tensor(CW)),
              lambda x, t: TF.sigmoid_focal_loss(x, t, pos_weight=_PW), _tb_sigmoid_focal_pw),
        _case("class_balanced (sigmoid)", _logits,
              lambda: tailwise.build_loss("class_balanced", class_counts=COUNTS, beta=0.99, loss_type="sigmoid"),
              lambda z, y: TF.class_balanced_loss(z, y, COUNTS, beta=0.99, loss_type="sigmoid"),
              lambda z, y: (F.binary_cross_entropy_with_logits(z, F.one_hot(y, z.shape[1]).to(z.dtype),
                                                               reduction="none").sum(1) * cbw[y]).mean()),
        _case("bal_bce", _logits, lambda: tailwise.build_loss("bal_bce", class_counts=COUNTS),
              lambda z, y: TF.bal_bce_loss(z, y, COUNTS), _tb_bal_bce),
        _case("eqlv2", _logits, lambda: tailwise.build_loss("eqlv2", num_classes=C), None, _tb_eqlv2),
        _case("equalized_focal", _logits, lambda: tailwise.build_loss("equalized_focal", num_classes=C), None,
              lambda z, y: _tb_sigmoid_focal(z, F.one_hot(y, z.shape[1]).to(z.dtype))),
        _case("dice", _seg, lambda: tailwise.build_loss("dice"), lambda z, y: TF.dice_loss(z, y), _tb_dice),
        _case("dice_ce", _seg, lambda: tailwise.build_loss("dice_ce"), lambda z, y: TF.dice_ce_loss(z, y),
              lambda z, y: _tb_dice(z, y) + F.cross_entropy(z, y)),
        _case("tversky", _seg, lambda: tailwise.build_loss("tversky"), lambda z, y: TF.tversky_loss(z, y),
              _tb_tversky),
        _case("focal_tversky", _seg, lambda: tailwise.build_loss("focal_tversky"),
              lambda z, y: TF.focal_tversky_loss(z, y), _tb_focal_tversky),
        _case("generalized_dice", _seg, lambda: tailwise.build_loss("generalized_dice"),
              lambda z, y: TF.generalized_dice_loss(z, y), _tb_generalized_dice),
        _case("giou", _boxes, lambda: tailwise.build_loss("giou"), lambda p, t: TF.giou_loss(p, t), _tb_giou),
        _case("diou", _boxes, lambda: tailwise.build_loss("diou"), lambda p, t: TF.diou_loss(p, t), _tb_diou),
        _case("ciou", _boxes, lambda: tailwise.build_loss("ciou"), lambda p, t: TF.ciou_loss(p, t), _tb_ciou),
        _case("supcon", _views, lambda: tailwise.build_loss("supcon"), lambda f, y: TF.supcon_loss(f, y),
              _tb_supcon),
        _case("info_nce", lambda: _views()[:1], lambda: tailwise.build_loss("info_nce"),
              lambda f: TF.info_nce_loss(f), _tb_nt_xent),
        _case("dcl", lambda: _views()[:1], lambda: tailwise.build_loss("dcl"), lambda f: TF.dcl_loss(f), _tb_dcl),
    ]
    return out


def _multilabel(n=N, c=C):
    g = _gen()
    return torch.randn(n, c, generator=g).requires_grad_(True), (torch.rand(n, c, generator=g) > 0.7).float()


# a tensor on the logits' device, passed every call (the functional's cached-per-version path)
_PW = torch.tensor(CW)


def _tb_sigmoid_focal_pw(x, t, alpha=0.25, gamma=2.0, pw=_PW):
    # torchvision's formula with BCEWithLogitsLoss's pos_weight in the cross-entropy
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw)
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def _tb_sigmoid_focal_rows(z, y, gamma=2.0):
    t = F.one_hot(y, z.shape[1]).to(z.dtype)
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    return (ce * (1 - p_t) ** gamma).sum(1)


# ----------------------------------------------------------------------------- measuring
def _step(fn, args):
    leaf = args[0]
    leaf.grad = None
    loss = fn(*args)
    loss.backward()


def count(fn, args, triton_path: bool):
    """(work ops, view ops, launches, Counter) of one forward + backward after a warm-up call."""
    ctx = _device_paths() if triton_path else _null()
    with ctx:
        _step(fn, args)
        counter = OpCounter()
        _State.launches = 0
        with counter:
            _step(fn, args)
    return counter.work, counter.views, _State.launches, counter.ops


def host_us(fn, args, triton_path: bool, repeat: int) -> float:
    ctx = _device_paths() if triton_path else _null()
    times, medians = [], []
    block = max(1, repeat // 5)
    with ctx:
        _step(fn, args)
        # the interpreter allocates many Python objects: keep the collector's pauses out of the
        # host time (they would land between launches)
        gc.collect()
        gc.disable()
        _State.skip_launches = True
        try:
            for _ in range(repeat):
                _State.launch_time = 0.0
                t0 = time.perf_counter()
                _step(fn, args)
                times.append(time.perf_counter() - t0 - _State.launch_time)
                if len(times) == block:
                    medians.append(statistics.median(times))
                    times = []
        finally:
            _State.skip_launches = False
            gc.enable()
    # the least disturbed of five blocks: other processes on a shared CPU only add time
    return min(medians) * 1e6


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def measure(case, repeat: int) -> dict:
    row = {"loss": case["name"]}
    set_backend("triton")
    try:
        mod = case["module"]()
        w, v, l, ops = count(mod, case["make"](), True)
        row.update(module_work=w, module_views=v, launches=l, module_ops=dict(ops))
        row["module_us"] = host_us(mod, case["make"](), True, repeat)
        if case["functional"] is not None:
            w, v, _, ops = count(case["functional"], case["make"](), True)
            row.update(functional_work=w, functional_views=v, functional_ops=dict(ops))
            row["functional_us"] = host_us(case["functional"], case["make"](), True, repeat)
    finally:
        set_backend(None)
    w, v, _, ops = count(case["textbook"], case["make"](), False)
    row.update(textbook_work=w, textbook_views=v, textbook_ops=dict(ops))
    row["textbook_us"] = host_us(case["textbook"], case["make"](), False, repeat)
    return row


def _fmt(x, nd=0):
    if x is None:
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="comma-separated loss names")
    ap.add_argument("--ops", action="store_true", help="also print each row's op histogram")
    ap.add_argument("--legacy-flags", action="store_true",
                    help="timing tailwise before the host-overhead work (PYTHONPATH=<old>/src): zero int32 "
                         "kernel arguments of skipped launches (its box kernel wrote per-program bad counts)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    _State.legacy_flags = args.legacy_flags
    _install_launch_hook()
    rows = []
    for case in cases():
        if args.only and case["name"].split(" ")[0] not in args.only.split(","):
            continue
        rows.append(measure(case, args.repeat))
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread; tiny tensors; "
          f"ops per forward+backward (work ops + views); host us per call (min over 5 blocks of the median of {args.repeat // 5} calls)\n")
    print("| loss | module: ops (views) | Triton launches | functional: ops (views) | textbook ops (views) "
          "| module us | functional us | textbook us |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fw = r.get("functional_work")
        fcell = "-" if fw is None else f"{fw} ({r['functional_views']})"
        print(f"| {r['loss']} | {r['module_work']} ({r['module_views']}) | {r['launches']} | {fcell} | "
              f"{r['textbook_work']} ({r['textbook_views']}) | {_fmt(r['module_us'])} | "
              f"{_fmt(r.get('functional_us'))} | {_fmt(r['textbook_us'])} |")
    if args.ops:
        for r in rows:
            print(f"\n{r['loss']} module: {dict(sorted(r['module_ops'].items(), key=lambda kv: -kv[1]))}")
            if "functional_ops" in r:
                print(f"{r['loss']} functional: {dict(sorted(r['functional_ops'].items(), key=lambda kv: -kv[1]))}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "device": "cpu", "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
