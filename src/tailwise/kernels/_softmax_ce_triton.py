"""Triton kernels of the ``softmax_ce`` op (see :mod:`tailwise.kernels.softmax_ce` for the math).

Imported only when a Triton kernel is about to run. Two kernels over rows of ``(N, C, D)``
logits (``D`` = product of the trailing dims; row ``r = n * D + d``), read with their strides so
``(N, C, d1, ...)`` inputs need no transpose copy:

* ``_fwd``: one online-softmax sweep over the classes of a block of rows: the per-row loss, the
  log-sum-exp and the row's gradient coefficient ``k`` (saved for backward, O(N)). With
  ``WRITE_GRAD`` it also writes the gradient (unscaled by ``grad_output``) into a buffer, which
  may be the logits themselves (the opt-in in-place mode). When the classes fit one block
  (``SINGLE``) the row tile is read from memory once.
* ``_bwd``: ``grad = go_r * s_c * (k_r (p_c - [c = y_r]) + e (W p_c - w_c))`` with
  ``p = exp(z - lse)``: one read of the logits and one write of the gradient; no softmax state
  is stored between forward and backward except ``lse`` and ``k``.

Bytes moved per forward+backward, default mode: read the logits twice, write the gradient once
(the minimum for a gradient that is not materialised in the forward). In-place mode: read +
write in the forward, read + write (the ``grad_output`` scale) in the backward, no extra memory.

The autograd wiring is a ``torch.library.custom_op`` pair while ``torch.compile`` traces
(``fullgraph=True`` sees one opaque op; CUDA graphs capture it), and a plain autograd function
in eager code, where the custom op's dispatch cost more host time than the kernels ran.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._validation import assert_values, check_class_indices, host_value_checks
from ._host import cdiv, next_pow2
from ._triton_math import expm1

__all__ = ["softmax_ce_triton", "softmax_ce_rows_triton"]


@triton.jit
def _row_coefs(z_t, lse, a_y, wsum, inv_c, gamma, eps, valid, FOCAL: tl.constexpr, SMOOTH: tl.constexpr):
    """Per-row (loss-without-smoothing-sum, k, e): grad = k (p - onehot) + e (W p - w)."""
    logp = z_t - lse
    if FOCAL:
        q = -expm1(logp)                     # 1 - p_y without cancellation
        q_pos = q > 0.0
        log_q = tl.log(tl.where(q_pos, q, 1.0))
        qg = tl.where(q_pos, tl.exp(gamma * log_q), 0.0)
        ratio = tl.where(q_pos, logp / tl.where(q_pos, q, 1.0), -1.0)   # l / (1 - p_y) -> -1
        dfdl = gamma * (1.0 - q) * qg * ratio - qg                       # f'(l), f = -(1-e^l)^g l
        loss = -qg * logp * a_y
        k = -dfdl * a_y
    else:
        loss = -(1.0 - eps) * a_y * logp
        k = (1.0 - eps) * a_y
    loss = tl.where(valid, loss, 0.0)
    k = tl.where(valid, k, 0.0)
    e = tl.where(valid, eps * inv_c, 0.0)
    return loss, k, e


@triton.jit
def _load_z(X, base, c, cmask, mask, s_c, SCL, OFF, HAS_SCL: tl.constexpr, HAS_OFF: tl.constexpr):
    """The transformed logits ``s_c x_c + o_c`` of a tile (float32; masked lanes hold 0) and ``s_c``."""
    z = tl.load(X + base[:, None] + c[None, :].to(tl.int64) * s_c, mask=mask, other=0.0).to(tl.float32)
    if HAS_SCL:
        sc = tl.load(SCL + c, mask=cmask, other=1.0)
        z = z * sc[None, :]
    else:
        sc = tl.full([1], 1.0, tl.float32)
    if HAS_OFF:
        z = z + tl.load(OFF + c, mask=cmask, other=0.0)[None, :]
    return z, sc


@triton.jit
def _class_w(W, c, cmask, HAS_W: tl.constexpr):
    if HAS_W:
        wc = tl.load(W + c, mask=cmask, other=0.0)
    else:
        wc = tl.where(cmask, 1.0, 0.0)
    return wc


@triton.jit
def _grad_tile(z, lse, k, e, ys, c, cmask, sc, W, wsum,
               HAS_W: tl.constexpr, HAS_SCL: tl.constexpr, SMOOTH: tl.constexpr):
    """``s_c (k (p_c - [c = y]) + e (W p_c - w_c))`` for a tile."""
    p = tl.exp(z - lse[:, None])
    hit = c[None, :] == ys[:, None]
    g = k[:, None] * (p - tl.where(hit, 1.0, 0.0))
    if SMOOTH:
        wc = _class_w(W, c, cmask, HAS_W)
        g += e[:, None] * (wsum * p - wc[None, :])
    if HAS_SCL:
        g = g * sc[None, :]
    return g


@triton.jit
def _fwd(X, Y, OFF, SCL, W, WSUM, LOSS, LSE, K, G, FLAG, DEN,
         R, C, D, s_n, s_c, s_d, g_n, g_c, g_d,
         gamma, eps, inv_c, ignore_index,
         HAS_OFF: tl.constexpr, HAS_SCL: tl.constexpr, HAS_W: tl.constexpr, FOCAL: tl.constexpr,
         SMOOTH: tl.constexpr, WRITE_GRAD: tl.constexpr, SINGLE: tl.constexpr, CHECK: tl.constexpr,
         WANT_DEN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CB: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    n = (rows // D).to(tl.int64)
    d = (rows % D).to(tl.int64)
    base = n * s_n + d * s_d
    gbase = n * g_n + d * g_d
    y = tl.load(Y + rows, mask=rmask, other=ignore_index).to(tl.int64)
    labelled = rmask & (y != ignore_index)
    # an out-of-range target reads nothing (loss and gradient 0) and, with CHECK, clears the
    # flag that the caller turns into a device-side assert
    valid = labelled & (y >= 0) & (y < C)
    if CHECK:
        nbad = tl.sum(tl.where(labelled & ~valid, 1, 0), axis=0)
        tl.store(FLAG, 0, mask=nbad > 0)
    ys = tl.where(valid, y, 0)
    z_t = tl.load(X + base + ys * s_c, mask=valid, other=0.0).to(tl.float32)
    if HAS_SCL:
        z_t = z_t * tl.load(SCL + ys, mask=valid, other=1.0)
    if HAS_OFF:
        z_t = z_t + tl.load(OFF + ys, mask=valid, other=0.0)
    if HAS_W:
        a_y = tl.load(W + ys, mask=valid, other=0.0)
    else:
        a_y = tl.full([BLOCK_R], 1.0, tl.float32)
    if WANT_DEN:
        # the row's share of the weighted mean's denominator (w_y, 0 when ignored): the caller
        # sums these instead of gathering the class weights again
        tl.store(DEN + rows, tl.where(valid, a_y, 0.0), mask=rmask)
    if SMOOTH:
        if HAS_W:
            wsum = tl.load(WSUM)
        else:
            wsum = C * 1.0   # unweighted: W = C, no tensor (and no op) on the host side
    else:
        wsum = 0.0
    cols = tl.arange(0, BLOCK_C)

    if SINGLE:
        # the whole row block is one register tile: read once, gradient from registers
        cmask = cols < C
        mask = rmask[:, None] & cmask[None, :]
        z, sc = _load_z(X, base, cols, cmask, mask, s_c, SCL, OFF, HAS_SCL, HAS_OFF)
        if SMOOTH:
            wc = _class_w(W, cols, cmask, HAS_W)
            wz = tl.sum(tl.where(mask, z * wc[None, :], 0.0), axis=1)
        else:
            wz = tl.zeros([BLOCK_R], tl.float32)
        zm = tl.where(mask, z, float("-inf"))
        m = tl.max(zm, axis=1)
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        lse = m_safe + tl.log(tl.sum(tl.exp(zm - m_safe[:, None]), axis=1))
        loss, k, e = _row_coefs(z_t, lse, a_y, wsum, inv_c, gamma, eps, valid, FOCAL, SMOOTH)
        if SMOOTH:
            loss += tl.where(valid, eps * inv_c * (wsum * lse - wz), 0.0)
        if WRITE_GRAD:
            g = _grad_tile(z, lse, k, e, ys, cols, cmask, sc, W, wsum, HAS_W, HAS_SCL, SMOOTH)
            tl.store(G + gbase[:, None] + cols[None, :].to(tl.int64) * g_c, g.to(G.dtype.element_ty), mask=mask)
    else:
        m = tl.full([BLOCK_R], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK_R], tl.float32)
        wz = tl.zeros([BLOCK_R], tl.float32)
        for i in range(NUM_CB):
            c = i * BLOCK_C + cols
            cmask = c < C
            mask = rmask[:, None] & cmask[None, :]
            z, sc = _load_z(X, base, c, cmask, mask, s_c, SCL, OFF, HAS_SCL, HAS_OFF)
            if SMOOTH:
                wc = _class_w(W, c, cmask, HAS_W)
                wz += tl.sum(tl.where(mask, z * wc[None, :], 0.0), axis=1)
            z = tl.where(mask, z, float("-inf"))
            m_new = tl.maximum(m, tl.max(z, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)   # all -inf so far: keep s = 0
            s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(z - m_safe[:, None]), axis=1)
            m = m_new
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        lse = m_safe + tl.log(s)
        loss, k, e = _row_coefs(z_t, lse, a_y, wsum, inv_c, gamma, eps, valid, FOCAL, SMOOTH)
        if SMOOTH:
            loss += tl.where(valid, eps * inv_c * (wsum * lse - wz), 0.0)
        if WRITE_GRAD:
            # second sweep: the row was just read by this program, so mostly from L2
            for i in range(NUM_CB):
                c = i * BLOCK_C + cols
                cmask = c < C
                mask = rmask[:, None] & cmask[None, :]
                z, sc = _load_z(X, base, c, cmask, mask, s_c, SCL, OFF, HAS_SCL, HAS_OFF)
                g = _grad_tile(z, lse, k, e, ys, c, cmask, sc, W, wsum, HAS_W, HAS_SCL, SMOOTH)
                tl.store(G + gbase[:, None] + c[None, :].to(tl.int64) * g_c, g.to(G.dtype.element_ty), mask=mask)
    tl.store(LOSS + rows, loss, mask=rmask)
    tl.store(LSE + rows, lse, mask=rmask)
    tl.store(K + rows, k, mask=rmask)


@triton.jit
def _bwd(X, Y, OFF, SCL, W, WSUM, LSE, K, GO, G,
         R, C, D, s_n, s_c, s_d, g_n, g_c, g_d, go_s,
         eps, inv_c, ignore_index,
         HAS_OFF: tl.constexpr, HAS_SCL: tl.constexpr, HAS_W: tl.constexpr, SMOOTH: tl.constexpr,
         BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CB: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    n = (rows // D).to(tl.int64)
    d = (rows % D).to(tl.int64)
    base = n * s_n + d * s_d
    gbase = n * g_n + d * g_d
    y = tl.load(Y + rows, mask=rmask, other=ignore_index).to(tl.int64)
    valid = rmask & (y != ignore_index) & (y >= 0) & (y < C)
    ys = tl.where(valid, y, 0)
    go = tl.load(GO + rows.to(tl.int64) * go_s, mask=rmask, other=0.0).to(tl.float32)
    lse = tl.load(LSE + rows, mask=rmask, other=0.0)
    k = tl.load(K + rows, mask=rmask, other=0.0) * go
    e = tl.where(valid, eps * inv_c, 0.0) * go
    if SMOOTH:
        if HAS_W:
            wsum = tl.load(WSUM)
        else:
            wsum = C * 1.0   # unweighted: W = C, no tensor (and no op) on the host side
    else:
        wsum = 0.0
    cols = tl.arange(0, BLOCK_C)
    for i in range(NUM_CB):
        c = i * BLOCK_C + cols
        cmask = c < C
        mask = rmask[:, None] & cmask[None, :]
        z, sc = _load_z(X, base, c, cmask, mask, s_c, SCL, OFF, HAS_SCL, HAS_OFF)
        g = _grad_tile(z, lse, k, e, ys, c, cmask, sc, W, wsum, HAS_W, HAS_SCL, SMOOTH)
        tl.store(G + gbase[:, None] + c[None, :].to(tl.int64) * g_c, g.to(G.dtype.element_ty), mask=mask)


@functools.lru_cache(maxsize=1024)  # a pure function of three ints, called twice per loss call
def _blocks(C: int, D: int, elem_size: int) -> Tuple[int, int, int, bool]:
    """BLOCK_R, BLOCK_C, num_warps, SINGLE for Hopper-class GPUs (the row tile in registers).

    Up to 8192 classes (16384 for 16-bit logits) a row is one block, read once; beyond, 4096-wide
    blocks. Rows are grouped so a program handles about 4096 elements: enough bytes in flight
    per SM for a bandwidth-bound kernel, and few enough registers per thread.
    """
    limit = 16384 if elem_size <= 2 else 8192
    bc = next_pow2(max(C, 1))
    single = bc <= limit
    if not single:
        bc = 4096
    per_prog = 4096 if D == 1 else 8192
    br = max(1, min(256 if D > 1 else 64, per_prog // bc))
    br = next_pow2(br)
    warps = max(4, min(16, (br * bc) // 512))
    return br, bc, warps, single


def _view3(x: Tensor) -> Tuple[int, int, int, Tuple[int, int, int]]:
    n, c = x.shape[0], x.shape[1]
    dd = math.prod(x.shape[2:]) if x.dim() > 2 else 1
    if x.dim() == 2:
        return n, c, 1, (x.stride(0), x.stride(1), 0)
    x3 = x.reshape(n, c, dd)  # a view for the contiguous layouts we accept
    return n, c, dd, (x3.stride(0), x3.stride(1), x3.stride(2))


def _launch_fwd(x, y, off, scl, w, wsum, gamma, eps, ignore_index, grad_into=None, flag=None, den=None):
    """``(loss, lse, k)``; with ``flag`` (an int32 ``(1,)`` holding 1) the kernel zeroes it
    when a target is neither ``ignore_index`` nor in ``[0, C)``; into ``den`` (float32, one per
    row) it writes the row's class weight (0 for an ignored row)."""
    n, c, dd, (s_n, s_c, s_d) = _view3(x)
    r = n * dd
    loss = torch.empty(r, dtype=torch.float32, device=x.device)
    lse = torch.empty(r, dtype=torch.float32, device=x.device)
    k = torch.empty(r, dtype=torch.float32, device=x.device)
    if r == 0:
        return loss, lse, k
    br, bc, warps, single = _blocks(c, dd, x.element_size())
    g = grad_into if grad_into is not None else x
    _, _, _, (g_n, g_c, g_d) = _view3(g)
    dummy = loss
    smooth = eps > 0
    _fwd[(cdiv(r, br),)](
        x, y, off if off is not None else dummy, scl if scl is not None else dummy,
        w if w is not None else dummy, wsum if wsum is not None else dummy, loss, lse, k, g,
        flag if flag is not None else dummy, den if den is not None else dummy,
        r, c, dd, s_n, s_c, s_d, g_n, g_c, g_d,
        float(gamma), float(eps), 1.0 / c, int(ignore_index),
        HAS_OFF=off is not None, HAS_SCL=scl is not None, HAS_W=w is not None, FOCAL=gamma > 0,
        SMOOTH=smooth, WRITE_GRAD=grad_into is not None, SINGLE=single, CHECK=flag is not None,
        WANT_DEN=den is not None, BLOCK_R=br, BLOCK_C=bc, NUM_CB=cdiv(c, bc), num_warps=warps)
    return loss, lse, k


def _launch_bwd(go, x, y, lse, k, off, scl, w, wsum, eps, ignore_index):
    n, c, dd, (s_n, s_c, s_d) = _view3(x)
    r = n * dd
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    if r == 0:
        return grad
    _, _, _, (g_n, g_c, g_d) = _view3(grad)
    go = go.reshape(-1)
    if go.numel() != r:
        go = go.expand(r)
    br, bc, warps, _ = _blocks(c, dd, x.element_size())
    dummy = lse
    _bwd[(cdiv(r, br),)](
        x, y, off if off is not None else dummy, scl if scl is not None else dummy,
        w if w is not None else dummy, wsum if wsum is not None else dummy, lse, k, go, grad,
        r, c, dd, s_n, s_c, s_d, g_n, g_c, g_d, go.stride(0),
        float(eps), 1.0 / c, int(ignore_index),
        HAS_OFF=off is not None, HAS_SCL=scl is not None, HAS_W=w is not None, SMOOTH=eps > 0,
        BLOCK_R=br, BLOCK_C=bc, NUM_CB=cdiv(c, bc), num_warps=warps)
    return grad


# --- autograd wiring: a custom-op pair (traceable by torch.compile, capturable by CUDA graphs) ---

def _new_flag(x: Tensor, check: bool) -> Optional[Tensor]:
    return torch.ones(1, dtype=torch.int32, device=x.device) if check else None


@torch.library.custom_op("tailwise::softmax_ce_fwd", mutates_args=())
def _op_fwd(x: Tensor, y: Tensor, off: Optional[Tensor], scl: Optional[Tensor], w: Optional[Tensor],
            wsum: Optional[Tensor], gamma: float, eps: float, ignore_index: int,
            check: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    flag = _new_flag(x, check)
    loss, lse, k = _launch_fwd(x, y, off, scl, w, wsum, gamma, eps, ignore_index, flag=flag)
    return loss, lse, k, (flag if flag is not None else x.new_empty(0, dtype=torch.int32))


@_op_fwd.register_fake
def _(x, y, off, scl, w, wsum, gamma, eps, ignore_index, check):
    r = y.numel()
    return (x.new_empty(r, dtype=torch.float32), x.new_empty(r, dtype=torch.float32),
            x.new_empty(r, dtype=torch.float32), x.new_empty(1 if check else 0, dtype=torch.int32))


@torch.library.custom_op("tailwise::softmax_ce_bwd", mutates_args=())
def _op_bwd(go: Tensor, x: Tensor, y: Tensor, lse: Tensor, k: Tensor, off: Optional[Tensor], scl: Optional[Tensor],
            w: Optional[Tensor], wsum: Optional[Tensor], eps: float, ignore_index: int) -> Tensor:
    return _launch_bwd(go, x, y, lse, k, off, scl, w, wsum, eps, ignore_index)


@_op_bwd.register_fake
def _(go, x, y, lse, k, off, scl, w, wsum, eps, ignore_index):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    x, y, off, scl, w, wsum, gamma, eps, ignore_index, check = inputs
    _, lse, k, _ = output
    ctx.save_for_backward(x, y, lse, k, off, scl, w, wsum)
    ctx.eps, ctx.ignore_index = eps, ignore_index


def _backward(ctx, g_loss, g_lse, g_k, g_flag):
    x, y, lse, k, off, scl, w, wsum = ctx.saved_tensors
    grad = _op_bwd(g_loss, x, y, lse, k, off, scl, w, wsum, ctx.eps, ctx.ignore_index)
    return grad, None, None, None, None, None, None, None, None, None


_op_fwd.register_autograd(_backward, setup_context=_setup)


class _EagerCE(torch.autograd.Function):
    """The custom-op pair's autograd without the custom op, for eager calls.

    Dispatching through ``torch.library.custom_op`` cost about 0.3 ms of host time per forward
    and as much per backward on the H100 host (more than the kernels at 65536 x 1000), so eager
    code launches the kernels from a plain autograd function; ``torch.compile`` still sees the
    opaque custom op (``softmax_ce_triton`` picks it while tracing).
    """

    @staticmethod
    def forward(ctx, x, y, off, scl, w, wsum, gamma, eps, ignore_index, check, want_den=False):
        flag = _new_flag(x, check)
        den = torch.empty(y.numel(), dtype=torch.float32, device=x.device) if want_den else None
        loss, lse, k = _launch_fwd(x, y, off, scl, w, wsum, gamma, eps, ignore_index, flag=flag, den=den)
        ctx.save_for_backward(x, y, lse, k, off, scl, w, wsum)
        ctx.eps, ctx.ignore_index = eps, ignore_index
        ctx.mark_non_differentiable(*(t for t in (flag, den) if t is not None))
        # no zero tensors are made for the (absent) gradients of flag and den
        ctx.set_materialize_grads(False)
        return loss, flag, den

    @staticmethod
    def backward(ctx, go, _g_flag=None, _g_den=None):
        if go is None:
            return (None,) * 11
        x, y, lse, k, off, scl, w, wsum = ctx.saved_tensors
        grad = _launch_bwd(go, x, y, lse, k, off, scl, w, wsum, ctx.eps, ctx.ignore_index)
        return grad, None, None, None, None, None, None, None, None, None, None


class _InplaceCE(torch.autograd.Function):
    """Liger-style: the forward writes the (unscaled) gradient into the logits buffer."""

    @staticmethod
    def forward(ctx, x, y, off, scl, w, wsum, gamma, eps, ignore_index, check):
        flag = _new_flag(x, check)
        loss, _, _ = _launch_fwd(x, y, off, scl, w, wsum, gamma, eps, ignore_index, grad_into=x, flag=flag)
        ctx.save_for_backward(x)
        if flag is not None:
            ctx.mark_non_differentiable(flag)
        ctx.set_materialize_grads(False)
        return loss, flag

    @staticmethod
    def backward(ctx, go, _g_flag=None):
        if go is None:
            return (None,) * 10
        (g,) = ctx.saved_tensors
        shape = (-1, 1) + (1,) * (g.dim() - 2)
        # go has the target's shape (N, d1, ...): put a 1 at the class dim to broadcast
        go_b = go.reshape(g.shape[:1] + g.shape[2:]).unsqueeze(1) if g.dim() > 2 else go.reshape(shape)
        return g.mul_(go_b.to(g.dtype)), None, None, None, None, None, None, None, None, None


def _f32_vec(v, device):
    if v is None:
        return None
    if v.requires_grad:
        v = v.detach()
    return v.to(device=device, dtype=torch.float32).contiguous()


def _prepare(input, target, offset, scale, class_weight, label_smoothing):
    x = input if input.is_contiguous() else input.contiguous()
    y = target.reshape(-1)
    if not y.is_contiguous():
        y = y.contiguous()
    off, scl, w = (_f32_vec(v, x.device) for v in (offset, scale, class_weight))
    wsum = None
    if label_smoothing > 0:
        wsum = w.sum().reshape(1) if w is not None else None
    return x, y, off, scl, w, wsum


@torch.library.custom_op("tailwise::softmax_ce_rows_grad_", mutates_args=("logits",))
def _op_rows_grad_(logits: Tensor, y: Tensor, off: Optional[Tensor], scl: Optional[Tensor], w: Optional[Tensor],
                   wsum: Optional[Tensor], gamma: float, eps: float, ignore_index: int) -> Tensor:
    """Per-row loss; the gradient with respect to the logits overwrites ``logits``."""
    loss, _, _ = _launch_fwd(logits, y, off, scl, w, wsum, gamma, eps, ignore_index, grad_into=logits)
    return loss


@_op_rows_grad_.register_fake
def _(logits, y, off, scl, w, wsum, gamma, eps, ignore_index):
    return logits.new_empty(y.numel(), dtype=torch.float32)


def softmax_ce_rows_triton(input: Tensor, target: Tensor, offset=None, scale=None, class_weight=None,
                           gamma: float = 0.0, label_smoothing: float = 0.0, ignore_index: int = -100,
                           grad_into: Optional[Tensor] = None):
    """No-autograd entry: ``(loss, lse, k)`` per row; with ``grad_into=input`` the gradient
    overwrites the logits and ``(loss, None, None)`` is returned.

    Used by the chunked fused linear cross-entropy (``grad_into`` is the chunk's logits).
    """
    x, y, off, scl, w, wsum = _prepare(input, target, offset, scale, class_weight, label_smoothing)
    eager = not torch.compiler.is_compiling()   # no custom-op dispatch cost outside compiled code
    if grad_into is None:
        if eager:
            return _launch_fwd(x, y, off, scl, w, wsum, float(gamma), float(label_smoothing), int(ignore_index))
        return _op_fwd(x, y, off, scl, w, wsum, float(gamma), float(label_smoothing), int(ignore_index), False)[:3]
    if grad_into is not input or x is not input:
        raise ValueError("grad_into must be the (contiguous) logits themselves")
    if eager:
        loss, _, _ = _launch_fwd(x, y, off, scl, w, wsum, float(gamma), float(label_smoothing), int(ignore_index),
                                 grad_into=x)
    else:
        loss = _op_rows_grad_(x, y, off, scl, w, wsum, float(gamma), float(label_smoothing), int(ignore_index))
    return loss, None, None


def softmax_ce_triton(input: Tensor, target: Tensor, offset=None, scale=None, class_weight=None,
                      gamma: float = 0.0, label_smoothing: float = 0.0, ignore_index: int = -100,
                      focal: bool = False, inplace: bool = False, validate: bool = False,
                      want_den: bool = False):
    """Per-element loss of shape ``target.shape`` (float32); see ``softmax_ce.softmax_ce_torch``.

    ``validate``: the target range check of ``check_class_indices``, done by the kernel (it reads
    the targets anyway) and turned into one device-side assert; where values may be read on the
    host (:func:`~tailwise._validation.host_value_checks`) the exact check runs first instead.
    ``want_den``: also return each row's class weight (0 where ignored), written by the kernel.
    """
    if want_den and (class_weight is None or inplace or torch.compiler.is_compiling()):
        from .softmax_ce import row_class_weights
        loss = softmax_ce_triton(input, target, offset, scale, class_weight, gamma, label_smoothing,
                                 ignore_index, focal, inplace, validate)
        return loss, row_class_weights(class_weight, target, ignore_index, input.shape[1])
    check = bool(validate)
    if check and host_value_checks(input, target):
        check_class_indices(target, input.shape[1], "target", ignore_index=ignore_index)
        check = False
    x, y, off, scl, w, wsum = _prepare(input, target, offset, scale, class_weight, label_smoothing)
    args = (x, y, off, scl, w, wsum, float(gamma), float(label_smoothing), int(ignore_index), check)
    if inplace and x.requires_grad and x is input:
        loss, flag = _InplaceCE.apply(*args)
    elif torch.compiler.is_compiling():
        loss, _, _, flag = _op_fwd(*args)
    else:
        loss, flag, den = _EagerCE.apply(*args, want_den)
    if check:
        assert_values(flag, f"target must be class indices in [0, {input.shape[1] - 1}] "
                            f"(or ignore_index={ignore_index})")
    if want_den:
        return loss.reshape(target.shape), den.reshape(target.shape)
    return loss.reshape(target.shape)
