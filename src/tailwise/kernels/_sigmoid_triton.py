"""The one elementwise Triton kernel of the sigmoid family (see :mod:`tailwise.kernels.sigmoid_family`).

Imported only when a Triton kernel is about to run. Per element of ``(R, C)`` logits:

    z = x + b_c                      t = target (dense, or on/off from a class index: no one-hot)
    ce = t softplus(-z) + (1 - t) softplus(z)        (stable: no softplus(z) - t z cancellation)
    m = t sigmoid(-z) + (1 - t) sigmoid(z)           (= 1 - p_t)
    W = alpha_t (t P_c + (1 - t) Q_c)                (alpha_t = alpha t + (1-alpha)(1-t), or 1)
    loss = W m^gamma_c ce
    dloss/dz = W [m^gamma (p - t) + gamma m^(gamma-1) p (1-p) (1-2t) ce]

The forward writes the loss per element or summed per row (one read of the logits, plus the
dense target if any); the backward recomputes the element and writes ``grad_output * dloss/dz``
(one more read, one write): three passes of ``(R, C)`` for forward+backward, and nothing of
size ``(R, C)`` kept between them except the logits themselves.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._validation import assert_values, check_class_indices, host_value_checks
from ._host import cdiv, next_pow2

__all__ = ["sigmoid_family_triton"]


@triton.jit
def _value(z, t, pw, nw, g, alpha, HAS_PQ: tl.constexpr, ALPHA: tl.constexpr, FOCAL: tl.constexpr,
           WANT_GRAD: tl.constexpr, G2: tl.constexpr):
    """(loss, dloss/dz) of elements ``z`` (transformed logits) with targets ``t`` (any shape)."""
    a = tl.abs(z)
    e = tl.exp(-a)                      # in (0, 1]
    v = 1.0 + e
    d = v - 1.0
    lg = tl.where(d == 0.0, e, tl.log(v) * (e / tl.where(d == 0.0, 1.0, d)))  # log1p(e), Goldberg
    sp_pos = tl.maximum(z, 0.0) + lg    # softplus(z)  = -log(1 - p)
    sp_neg = tl.maximum(-z, 0.0) + lg   # softplus(-z) = -log p
    ce = t * sp_neg + (1.0 - t) * sp_pos
    inv = 1.0 / v
    p = tl.where(z >= 0, inv, e * inv)          # sigmoid(z)
    q = tl.where(z >= 0, e * inv, inv)          # sigmoid(-z) = 1 - p, without cancellation
    w = tl.full(z.shape, 1.0, tl.float32)
    if ALPHA:
        w = alpha * t + (1.0 - alpha) * (1.0 - t)
    if HAS_PQ:
        w = w * (t * pw + (1.0 - t) * nw)
    if FOCAL:
        m = t * q + (1.0 - t) * p               # 1 - p_t
        mpos = m > 0.0
        m_safe = tl.where(mpos, m, 1.0)
        if G2:
            mg = m * m                          # gamma = 2 (the default): no log/exp per element
        else:
            mg = tl.where(mpos, tl.exp(g * tl.log(m_safe)), 0.0)
        loss = w * mg * ce
        if WANT_GRAD:
            dm = p * q * (1.0 - 2.0 * t)
            if G2:
                low = m
            else:
                low = tl.where(mpos, mg / m_safe, 0.0)   # m^(g-1); 0 where p (1-p) = 0
            grad = w * (mg * (p - t) + g * low * dm * ce)
        else:
            grad = loss
    else:
        loss = w * ce
        if WANT_GRAD:
            grad = w * (p - t)
        else:
            grad = loss
    return loss, grad


@triton.jit
def _load_tile(X, T, Y, B, P, Q, GV, rows, c, mask, cmask, C, on, off, gamma,
               DENSE: tl.constexpr, HAS_B: tl.constexpr, HAS_PQ: tl.constexpr, FOCAL: tl.constexpr,
               HAS_GV: tl.constexpr):
    """A ``(BLOCK_R, BLOCK_C)`` tile: ``z``, ``t``, the per-class vectors broadcast, the offsets."""
    offs = rows.to(tl.int64)[:, None] * C + c[None, :]
    z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        z = z + tl.load(B + c, mask=cmask, other=0.0)[None, :]
    if DENSE:
        t = tl.load(T + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        y = tl.load(Y + rows)               # rows already clamped into range by the caller
        t = tl.where(c[None, :] == y[:, None], on, off)
    pw = 1.0
    nw = 1.0
    if HAS_PQ:
        pw = tl.load(P + c, mask=cmask, other=0.0)[None, :]
        nw = tl.load(Q + c, mask=cmask, other=0.0)[None, :]
    g = gamma
    if FOCAL:
        if HAS_GV:
            g = tl.load(GV + c, mask=cmask, other=0.0)[None, :]
    return z, t, pw, nw, g, offs


@triton.jit
def _fwd(X, T, Y, B, P, Q, GV, OUT, FLAG, R, C, on, off, alpha, gamma,
         DENSE: tl.constexpr, HAS_B: tl.constexpr, HAS_PQ: tl.constexpr, ALPHA: tl.constexpr,
         FOCAL: tl.constexpr, HAS_GV: tl.constexpr, ROW_SUM: tl.constexpr, G2: tl.constexpr,
         CHECK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CB: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    rows_c = tl.where(rmask, rows, 0)
    if CHECK:
        # the class-index range check of check_class_indices, on targets read here anyway: a bad
        # index clears the flag the caller asserts on (an index is only compared with the column
        # number, never used as an address, so a bad one reads nothing out of bounds)
        yc = tl.load(Y + rows_c)
        nbad = tl.sum(tl.where(rmask & ((yc < 0) | (yc >= C)), 1, 0), axis=0)
        tl.store(FLAG, 0, mask=nbad > 0)
    acc = tl.zeros([BLOCK_R], tl.float32)
    for i in range(NUM_CB):
        c = i * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = c < C
        mask = rmask[:, None] & cmask[None, :]
        z, t, pw, nw, g, offs = _load_tile(X, T, Y, B, P, Q, GV, rows_c, c, mask, cmask, C, on, off, gamma,
                                           DENSE, HAS_B, HAS_PQ, FOCAL, HAS_GV)
        loss, _ = _value(z, t, pw, nw, g, alpha, HAS_PQ, ALPHA, FOCAL, False, G2)
        loss = tl.where(mask, loss, 0.0)
        if ROW_SUM:
            acc += tl.sum(loss, axis=1)
        else:
            tl.store(OUT + offs, loss, mask=mask)
    if ROW_SUM:
        tl.store(OUT + rows, acc, mask=rmask)


@triton.jit
def _bwd(X, T, Y, B, P, Q, GV, GO, G, R, C, go_sr, go_sc, on, off, alpha, gamma,
         DENSE: tl.constexpr, HAS_B: tl.constexpr, HAS_PQ: tl.constexpr, ALPHA: tl.constexpr,
         FOCAL: tl.constexpr, HAS_GV: tl.constexpr, GO_MODE: tl.constexpr, G2: tl.constexpr,
         BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CB: tl.constexpr):
    """2-D tiles. ``GO_MODE``: 0 one scalar, 1 one value per row, 2 one per element."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    rows_c = tl.where(rmask, rows, 0)
    # grad_output read once per row block (a per-element gather of the same few addresses was
    # one extra load instruction per element)
    if GO_MODE == 0:
        go_r = tl.load(GO).to(tl.float32)
    elif GO_MODE == 1:
        go_r = tl.load(GO + rows_c.to(tl.int64) * go_sr).to(tl.float32)[:, None]
    for i in range(NUM_CB):
        c = i * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = c < C
        mask = rmask[:, None] & cmask[None, :]
        z, t, pw, nw, g, offs = _load_tile(X, T, Y, B, P, Q, GV, rows_c, c, mask, cmask, C, on, off, gamma,
                                           DENSE, HAS_B, HAS_PQ, FOCAL, HAS_GV)
        _, grad = _value(z, t, pw, nw, g, alpha, HAS_PQ, ALPHA, FOCAL, True, G2)
        if GO_MODE == 2:
            go = tl.load(GO + rows_c.to(tl.int64)[:, None] * go_sr + c[None, :] * go_sc, mask=mask,
                         other=0.0).to(tl.float32)
        else:
            go = go_r
        tl.store(G + offs, (grad * go).to(G.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_flat(X, T, Y, B, P, Q, GV, GO, G, N, C, go_sr, go_sc, on, off, alpha, gamma,
              DENSE: tl.constexpr, HAS_B: tl.constexpr, HAS_PQ: tl.constexpr, ALPHA: tl.constexpr,
              FOCAL: tl.constexpr, HAS_GV: tl.constexpr, GO_MODE: tl.constexpr, G2: tl.constexpr,
              WIDE: tl.constexpr, BLOCK: tl.constexpr):
    """1-D blocks of the flattened ``(R, C)`` elements: aligned, vectorised loads and stores
    whatever ``C`` is (a row of 1203 float32 starts at no 16-byte boundary, so 2-D tiles could not
    vectorise); the per-class vectors and the per-row target are gathered (cache hits)."""
    pid = tl.program_id(0)
    if WIDE:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    offs_c = tl.where(mask, offs, 0)
    rows = offs_c // C
    c = offs_c - rows * C
    z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        z = z + tl.load(B + c)
    if DENSE:
        t = tl.load(T + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        y = tl.load(Y + rows)
        t = tl.where(c == y, on, off)
    pw = 1.0
    nw = 1.0
    if HAS_PQ:
        pw = tl.load(P + c)
        nw = tl.load(Q + c)
    g = gamma
    if FOCAL:
        if HAS_GV:
            g = tl.load(GV + c)
    _, grad = _value(z, t, pw, nw, g, alpha, HAS_PQ, ALPHA, FOCAL, True, G2)
    if GO_MODE == 0:
        go = tl.load(GO).to(tl.float32)
    elif GO_MODE == 1:
        go = tl.load(GO + rows * go_sr).to(tl.float32)
    else:
        go = tl.load(GO + rows * go_sr + c * go_sc).to(tl.float32)
    tl.store(G + offs, (grad * go).to(G.dtype.element_ty), mask=mask)


# Launch configurations: Hopper defaults chosen from the H100 runs in
# benchmarks/NOTES-gpu-classification.md; TAILWISE_SIGMOID_TUNE overrides them for tuning
# ("fwd=BR,BC,W;bwd=flat,BLOCK,W" or "bwd=2d,BR,BC,W").
TUNE = {"fwd": None, "bwd": None}


def _parse_tune():
    spec = os.environ.get("TAILWISE_SIGMOID_TUNE", "")
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, _, val = part.partition("=")
        if key == "fwd":
            TUNE["fwd"] = tuple(int(v) for v in val.split(","))
        elif key == "bwd":
            kind, *nums = val.split(",")
            TUNE["bwd"] = (kind,) + tuple(int(v) for v in nums)


_parse_tune()


def _blocks(C: int, heavy: bool) -> Tuple[int, int, int, int]:
    """Forward tiles of about 4096 elements (H100 runs, benchmarks/NOTES-gpu-classification.md):
    rows of up to 128 classes in one 128-wide tile with 8 warps; wider rows in 256-wide tiles with
    4 warps, or 128-wide ones for a non-integer focal exponent (``heavy``: its log/exp per element
    needs more registers; 256-wide tiles spilled and ran 1.5x slower)."""
    if TUNE["fwd"] is not None:
        br, bc, warps = TUNE["fwd"]
        return br, bc, warps, cdiv(C, bc)
    full = next_pow2(max(C, 1))
    bc = min(full, 128 if heavy else 256)
    br = next_pow2(max(1, 4096 // bc))
    return br, bc, 8 if full <= 128 else 4, cdiv(C, bc)


def _bwd_config(C: int):
    """Backward: flat 1-D blocks of the ``R * C`` elements (aligned vector loads and stores
    whatever ``C`` is); 512 elements and 4 warps per program were the fastest of the tried."""
    if TUNE["bwd"] is not None:
        return TUNE["bwd"]
    return ("flat", 512, 4)


def _flags(x, target, bias, pos_w, neg_w, alpha, gamma, gamma_vec):
    dense = target.is_floating_point()
    return dict(DENSE=dense, HAS_B=bias is not None, HAS_PQ=pos_w is not None, ALPHA=alpha >= 0,
                FOCAL=(gamma > 0) or (gamma_vec is not None), HAS_GV=gamma_vec is not None,
                G2=gamma == 2.0 and gamma_vec is None)


def _launch_fwd(x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma, row_sum, flag=None):
    """``flag``: an int32 ``(1,)`` holding 1, cleared by the kernel if a class index is out of range."""
    R, C = x.shape
    out = torch.empty((R,) if row_sum else (R, C), dtype=torch.float32, device=x.device)
    if R == 0 or C == 0:
        return out.zero_()
    heavy = gamma_vec is not None or (gamma > 0 and gamma != 2.0)
    br, bc, warps, ncb = _blocks(C, heavy)
    dense = target.is_floating_point()
    d = out
    _fwd[(cdiv(R, br),)](
        x, target if dense else d, d if dense else target, bias if bias is not None else d,
        pos_w if pos_w is not None else d, neg_w if neg_w is not None else d,
        gamma_vec if gamma_vec is not None else d, out, flag if flag is not None else d, R, C,
        float(on), float(off), float(alpha), float(gamma),
        ROW_SUM=row_sum, CHECK=flag is not None and not dense, BLOCK_R=br, BLOCK_C=bc, NUM_CB=ncb, num_warps=warps,
        **_flags(x, target, bias, pos_w, neg_w, alpha, gamma, gamma_vec))
    return out


def _launch_bwd(go, x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma):
    R, C = x.shape
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    if R == 0 or C == 0:
        return grad
    if go.dim() == 0 or go.numel() == 1:
        go_mode, go_sr, go_sc = 0, 0, 0
    elif go.dim() == 1:
        go_mode, go_sr, go_sc = 1, go.stride(0), 0
    elif go.stride(1) == 0:
        go_mode, go_sr, go_sc = 1, go.stride(0), 0
    else:
        go_mode, go_sr, go_sc = 2, go.stride(0), go.stride(1)
    dense = target.is_floating_point()
    d = grad
    args = (x, target if dense else d, d if dense else target, bias if bias is not None else d,
            pos_w if pos_w is not None else d, neg_w if neg_w is not None else d,
            gamma_vec if gamma_vec is not None else d, go)
    flags = _flags(x, target, bias, pos_w, neg_w, alpha, gamma, gamma_vec)
    cfg = _bwd_config(C)
    if cfg[0] == "flat":
        _, block, warps = cfg
        n = R * C
        _bwd_flat[(cdiv(n, block),)](
            *args, grad, n, C, go_sr, go_sc, float(on), float(off), float(alpha), float(gamma),
            GO_MODE=go_mode, WIDE=n + block >= 2 ** 31, BLOCK=block, num_warps=warps, **flags)
    else:
        _, br, bc, warps = cfg
        _bwd[(cdiv(R, br),)](
            *args, grad, R, C, go_sr, go_sc, float(on), float(off), float(alpha), float(gamma),
            GO_MODE=go_mode, BLOCK_R=br, BLOCK_C=bc, NUM_CB=cdiv(C, bc),
            num_warps=warps, **flags)
    return grad


@torch.library.custom_op("tailwise::sigmoid_family_fwd", mutates_args=())
def _op_fwd(x: Tensor, target: Tensor, bias: Optional[Tensor], pos_w: Optional[Tensor], neg_w: Optional[Tensor],
            gamma_vec: Optional[Tensor], on: float, off: float, alpha: float, gamma: float, row_sum: bool) -> Tensor:
    return _launch_fwd(x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma, row_sum)


@_op_fwd.register_fake
def _(x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma, row_sum):
    return x.new_empty((x.shape[0],) if row_sum else tuple(x.shape), dtype=torch.float32)


@torch.library.custom_op("tailwise::sigmoid_family_bwd", mutates_args=())
def _op_bwd(go: Tensor, x: Tensor, target: Tensor, bias: Optional[Tensor], pos_w: Optional[Tensor],
            neg_w: Optional[Tensor], gamma_vec: Optional[Tensor], on: float, off: float, alpha: float,
            gamma: float) -> Tensor:
    return _launch_bwd(go, x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma)


@_op_bwd.register_fake
def _(go, x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma, row_sum = inputs
    ctx.save_for_backward(x, target, bias, pos_w, neg_w, gamma_vec)
    ctx.args = (on, off, alpha, gamma)


def _backward(ctx, go):
    x, target, bias, pos_w, neg_w, gamma_vec = ctx.saved_tensors
    grad = _op_bwd(go, x, target, bias, pos_w, neg_w, gamma_vec, *ctx.args)
    return grad, None, None, None, None, None, None, None, None, None, None


_op_fwd.register_autograd(_backward, setup_context=_setup)


class _Eager(torch.autograd.Function):
    """The custom op's autograd without the custom op, for eager calls: its dispatch cost about
    0.3 ms of host time per call on the H100 host (see ``_softmax_ce_triton._EagerCE``)."""

    @staticmethod
    def forward(ctx, x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma, row_sum, flag=None):
        ctx.save_for_backward(x, target, bias, pos_w, neg_w, gamma_vec)
        ctx.args = (on, off, alpha, gamma)
        return _launch_fwd(x, target, bias, pos_w, neg_w, gamma_vec, on, off, alpha, gamma, row_sum, flag)

    @staticmethod
    def backward(ctx, go):
        x, target, bias, pos_w, neg_w, gamma_vec = ctx.saved_tensors
        grad = _launch_bwd(go, x, target, bias, pos_w, neg_w, gamma_vec, *ctx.args)
        return grad, None, None, None, None, None, None, None, None, None, None, None


def sigmoid_family_triton(x: Tensor, target: Tensor, *, bias: Optional[Tensor] = None,
                          pos_w: Optional[Tensor] = None, neg_w: Optional[Tensor] = None,
                          gamma_vec: Optional[Tensor] = None, on: float = 1.0, off: float = 0.0,
                          alpha: float = -1.0, gamma: float = 0.0, row_sum: bool = True,
                          validate: bool = False) -> Tensor:
    """Loss ``(R,)`` (``row_sum``) or ``(R, C)`` in float32 for ``(R, C)`` logits (any float dtype).

    ``target``: int class indices ``(R,)`` (``on`` at the class, ``off`` elsewhere) or a float
    tensor ``(R, C)``. Per-class vectors are float32 ``(C,)``; ``pos_w`` and ``neg_w`` go together.
    ``validate`` (class indices): the range check of ``check_class_indices``, done by the forward
    kernel as it reads the targets and turned into one device-side assert (eager calls; while
    compiling, and where values may be read on the host, ``check_class_indices`` runs instead).
    """
    if x.dim() != 2:
        raise ValueError(f"sigmoid_family_triton expects (R, C) logits, got shape {tuple(x.shape)}")
    x = x.contiguous()
    target = target.contiguous()
    def f32(v):
        return None if v is None else v.detach().to(device=x.device, dtype=torch.float32).contiguous()

    if pos_w is not None and neg_w is None:
        neg_w = torch.ones_like(pos_w)
    if neg_w is not None and pos_w is None:
        pos_w = torch.ones_like(neg_w)
    args = (x, target, f32(bias), f32(pos_w), f32(neg_w), f32(gamma_vec), float(on), float(off),
            float(alpha), float(gamma), bool(row_sum))
    check = bool(validate) and not target.is_floating_point()
    if check and (torch.compiler.is_compiling() or host_value_checks(x, target)):
        check_class_indices(target, x.shape[1], "target")
        check = False
    if torch.compiler.is_compiling():
        return _op_fwd(*args)
    if not check:
        return _Eager.apply(*args)
    flag = torch.ones(1, dtype=torch.int32, device=x.device)
    out = _Eager.apply(*args, flag)
    assert_values(flag, f"target must be class indices in [0, {x.shape[1] - 1}]")
    return out
