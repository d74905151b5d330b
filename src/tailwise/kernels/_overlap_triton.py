"""Triton kernels of op ``"overlap_index"`` (see :mod:`tailwise.kernels.overlap` for the contract).

Layout: logits ``(N, C, S)`` (contiguous, spatial flattened), target ``(N, S)`` of any integer
dtype read as is (no one-hot, no int64 copy, ``ignore_index`` tested in registers).

* Forward, grid ``(N, P)``: program ``(n, j)`` walks ``tiles_per_prog`` consecutive tiles of
  ``C_PAD x BLOCK_S`` logits of image ``n`` (every class of ``BLOCK_S`` pixels, so the softmax
  over C is register-local), and accumulates per-class ``tp, sp, sy, sq`` and the CE sums; it
  writes one row of partial sums ``part[n, j]``. ``P`` is chosen so that about eight programs
  run per SM whatever N is (a split-S reduction, not one program per image), and the partials
  are summed by ``part.sum(1)``: a fixed order, so the result is deterministic.
* Backward, grid ``(N, S / BLOCK_S)``: recomputes the softmax of a tile and writes
  ``dx = p * (G - sum_c p G) + g_ce w (p - y)`` with ``G = m (g_sp + 2 p g_sq + y g_tp)``.

Bandwidth for fp32 logits: forward reads ``4 N C S`` bytes (+ the target), backward reads them
again and writes ``4 N C S``: three passes over the logits, e.g. about 0.26 GB, ~0.1 ms at
3 TB/s, for ``(2, 14, 128, 128, 128)`` (plus the int64 target twice).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._validation import assert_values, check_class_indices, host_value_checks
from ._host import cdiv, next_pow2

__all__ = ["overlap_index_triton"]

_ACT_NONE, _ACT_SOFTMAX, _ACT_SIGMOID = 0, 1, 2
# elements per C_PAD x BLOCK_S tile and warps per program: 2048 x 8 warps keeps ptxas at <= 128
# registers (forward) and 64 (backward) per thread for C <= 32 on sm_90, without spills
_TILE = 2048
_WARPS = 8
_SM_COUNT = {}


@triton.jit
def _softplus_neg_abs(x):
    # log(1 + exp(-|x|)) without losing the tail (no log1p in triton.language)
    e = tl.exp(-tl.abs(x))
    return tl.where(e < 1e-4, e * (1.0 - e * (0.5 - e / 3.0)), tl.log(1.0 + e))


@triton.jit
def _probs(x, cmask, ACT: tl.constexpr):
    """Return (p, lse) of a (C_PAD, BLOCK_S) tile; lse only meaningful for the softmax."""
    if ACT == 1:
        xs = tl.where(cmask, x, float("-inf"))
        mx = tl.max(xs, axis=0)
        e = tl.exp(xs - mx[None, :])
        den = tl.sum(e, axis=0)
        p = e / den[None, :]
        lse = mx + tl.log(den)
    elif ACT == 2:
        p = tl.sigmoid(x)
        lse = tl.sum(x, axis=0) * 0.0
    else:
        p = x
        lse = tl.sum(x, axis=0) * 0.0
    return p, lse


@triton.jit
def _overlap_fwd_kernel(x_ptr, t_ptr, w_ptr, part_ptr, flag_ptr, C, S, ignore_index, tiles_per_prog,
                        C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, ACT: tl.constexpr, OFFSET: tl.constexpr,
                        HAS_IGNORE: tl.constexpr, SQUARED: tl.constexpr, CE: tl.constexpr,
                        HAS_W: tl.constexpr, CHECK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    acc_dtype = part_ptr.dtype.element_ty
    cs = tl.arange(0, C_PAD)
    cm = cs < C
    x_base = x_ptr + n * C * S
    t_base = t_ptr + n * S
    rows = cs.to(tl.int64)[:, None] * S
    acc_tp = tl.zeros([C_PAD], dtype=acc_dtype)
    acc_sp = tl.zeros([C_PAD], dtype=acc_dtype)
    acc_sy = tl.zeros([C_PAD], dtype=acc_dtype)
    acc_sq = tl.zeros([C_PAD], dtype=acc_dtype)
    acc_ce = tl.zeros([BLOCK_S], dtype=acc_dtype)
    acc_nm = tl.zeros([BLOCK_S], dtype=acc_dtype)
    i = 0
    while i < tiles_per_prog:  # a while loop: the interpreter cannot range() over a runtime scalar
        offs = (j * tiles_per_prog + i).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
        sm = offs < S
        t = tl.load(t_base + offs, mask=sm, other=0)
        if HAS_IGNORE:
            keep = t != ignore_index
            if CHECK:
                # a target outside [0, C + OFFSET) (binary: {0, 1}) clears the validity flag; it
                # matches no class below, so nothing out of range is read
                nbad = tl.sum(tl.where(sm & keep & ((t < 0) | (t >= C + OFFSET)), 1, 0), axis=0)
                tl.store(flag_ptr, 0, mask=nbad > 0)
            t = tl.where(keep, t, 0)
            mf = keep.to(acc_dtype)
        else:
            if CHECK:
                nbad = tl.sum(tl.where(sm & ((t < 0) | (t >= C + OFFSET)), 1, 0), axis=0)
                tl.store(flag_ptr, 0, mask=nbad > 0)
            mf = tl.full([BLOCK_S], 1.0, acc_dtype)
        cm2 = cm[:, None] & sm[None, :]
        x = tl.load(x_base + rows + offs[None, :], mask=cm2, other=0.0).to(acc_dtype)
        p, lse = _probs(x, cm[:, None], ACT)
        hit = t[None, :] == (cs[:, None] + OFFSET)
        pm = tl.where(cm2, p * mf[None, :], 0.0)
        acc_sp += tl.sum(pm, axis=1)
        acc_tp += tl.sum(tl.where(hit, pm, 0.0), axis=1)
        acc_sy += tl.sum(tl.where(hit & cm2, mf[None, :], 0.0), axis=1)
        if SQUARED:
            acc_sq += tl.sum(pm * p, axis=1)
        if CE:
            if ACT == 1:
                xt = tl.sum(tl.where(hit & cm2, x, 0.0), axis=0)
                ce = lse - xt
                if HAS_W:
                    tw = tl.minimum(tl.maximum(t, 0), C - 1)
                    wt = tl.load(w_ptr + tw, mask=sm, other=0.0).to(acc_dtype) * mf
                else:
                    wt = mf
            else:  # binary: BCE with logits of the single channel
                x0 = tl.sum(tl.where((cs[:, None] == 0) & cm2, x, 0.0), axis=0)
                y = (t == OFFSET).to(acc_dtype)
                ce = tl.maximum(x0, 0.0) - x0 * y + _softplus_neg_abs(x0)
                wt = mf
            acc_ce += tl.where(sm, wt * ce, 0.0)
            acc_nm += tl.where(sm, wt, 0.0)
        i += 1
    out = part_ptr + (n * tl.num_programs(1) + j) * 6 * C_PAD + cs
    tl.store(out, acc_tp)
    tl.store(out + C_PAD, acc_sp)
    tl.store(out + 2 * C_PAD, acc_sy)
    tl.store(out + 3 * C_PAD, acc_sq)
    tl.store(out + 4 * C_PAD, tl.where(cs == 0, tl.sum(acc_ce, axis=0), 0.0))
    tl.store(out + 5 * C_PAD, tl.where(cs == 0, tl.sum(acc_nm, axis=0), 0.0))


@triton.jit
def _overlap_bwd_kernel(x_ptr, t_ptr, w_ptr, gtp_ptr, gsp_ptr, gsq_ptr, gce_ptr, dx_ptr, C, S, ignore_index,
                        s_tp_n, s_tp_c, s_sp_n, s_sp_c, s_sq_n, s_sq_c, s_ce,
                        C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, ACT: tl.constexpr, OFFSET: tl.constexpr,
                        HAS_IGNORE: tl.constexpr, SQUARED: tl.constexpr, CE: tl.constexpr,
                        HAS_W: tl.constexpr, HAS_GTP: tl.constexpr, HAS_GSP: tl.constexpr,
                        ACC64: tl.constexpr):
    # the upstream gradients of tp, sp, sq ((N, C), any strides: an expanded mean's gradient is
    # read in place) and ce ((N,)) are read directly; an absent one (None: not used) is zero
    n = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    if ACC64:
        acc_dtype = tl.float64
    else:
        acc_dtype = tl.float32
    cs = tl.arange(0, C_PAD)
    cm = cs < C
    offs = j.to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    sm = offs < S
    cm2 = cm[:, None] & sm[None, :]
    ptrs = n * C * S + cs.to(tl.int64)[:, None] * S + offs[None, :]
    t = tl.load(t_ptr + n * S + offs, mask=sm, other=0)
    if HAS_IGNORE:
        keep = t != ignore_index
        t = tl.where(keep, t, 0)
        mf = keep.to(acc_dtype)
    else:
        mf = tl.full([BLOCK_S], 1.0, acc_dtype)
    x = tl.load(x_ptr + ptrs, mask=cm2, other=0.0).to(acc_dtype)
    p, lse = _probs(x, cm[:, None], ACT)
    hit = t[None, :] == (cs[:, None] + OFFSET)
    csl = cs.to(tl.int64)
    if HAS_GTP:
        g_tp = tl.load(gtp_ptr + n * s_tp_n + csl * s_tp_c, mask=cm, other=0.0).to(acc_dtype)
    else:
        g_tp = tl.zeros([C_PAD], dtype=acc_dtype)
    if HAS_GSP:
        g_sp = tl.load(gsp_ptr + n * s_sp_n + csl * s_sp_c, mask=cm, other=0.0).to(acc_dtype)
    else:
        g_sp = tl.zeros([C_PAD], dtype=acc_dtype)
    G = g_sp[:, None] + tl.where(hit, g_tp[:, None], 0.0)
    if SQUARED:
        g_sq = tl.load(gsq_ptr + n * s_sq_n + csl * s_sq_c, mask=cm, other=0.0).to(acc_dtype)
        G += 2.0 * p * g_sq[:, None]
    G = G * mf[None, :]
    if ACT == 1:
        G = tl.where(cm2, G, 0.0)
        dx = p * (G - tl.sum(p * G, axis=0)[None, :])
    elif ACT == 2:
        dx = G * p * (1.0 - p)
    else:
        dx = G
    if CE:
        g_ce = tl.load(gce_ptr + n * s_ce).to(acc_dtype)
        if ACT == 1 and HAS_W:
            tw = tl.minimum(tl.maximum(t, 0), C - 1)
            wt = tl.load(w_ptr + tw, mask=sm, other=0.0).to(acc_dtype) * mf
        else:
            wt = mf
        dx += (g_ce * wt)[None, :] * (p - hit.to(acc_dtype))
    tl.store(dx_ptr + ptrs, dx.to(dx_ptr.dtype.element_ty), mask=cm2)


# ----------------------------------------------------------------------------- launchers
def _meta(c: int):
    c_pad = next_pow2(max(c, 1))
    block_s = max(16, min(1024, _TILE // c_pad))
    return c_pad, block_s


def _programs_per_image(device: torch.device, n: int, tiles: int) -> int:
    if device.type == "cuda":
        if device.index not in _SM_COUNT:
            _SM_COUNT[device.index] = torch.cuda.get_device_properties(device).multi_processor_count
        target = 8 * _SM_COUNT[device.index]  # enough loads in flight per SM for a bandwidth-bound loop
    else:  # the interpreter: two programs per image, so the tile loop and the partial sums are exercised
        target = 2 * max(n, 1)
    return max(1, min(tiles, -(-target // max(n, 1))))


def _flags(act: int, ignore_index: int, has_ignore: bool, squared: bool, want_ce: bool, has_w: bool, offset: int):
    return dict(ACT=act, OFFSET=offset, HAS_IGNORE=has_ignore, SQUARED=squared, CE=want_ce, HAS_W=has_w)


def _fwd(x, t, w, ignore_index: int, has_ignore: bool, act: int, offset: int, squared: bool, want_ce: bool,
         flag=None):
    """The statistics (views of one small tensor); with ``flag`` (int32 ``(1,)`` holding 1) the
    kernel also clears it when a target is out of range."""
    n, c, s = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    c_pad, block_s = _meta(c)
    tiles = cdiv(s, block_s)
    if n == 0 or s == 0:
        sums = x.new_zeros((n, 6, c_pad), dtype=acc)
    else:
        progs = _programs_per_image(x.device, n, tiles)
        per = cdiv(tiles, progs)
        progs = cdiv(tiles, per)
        part = torch.empty((n, progs, 6, c_pad), device=x.device, dtype=acc)
        _overlap_fwd_kernel[(n, progs)](x, t, w if w is not None else x, part, flag if flag is not None else part,
                                        c, s, ignore_index, per, C_PAD=c_pad, BLOCK_S=block_s, num_warps=_WARPS,
                                        CHECK=flag is not None,
                                        **_flags(act, ignore_index, has_ignore, squared, want_ce, w is not None, offset))
        sums = part.sum(1)
    sums = sums.to(x.dtype)
    # views of one small tensor: no copy kernels (the custom-op form clones them)
    return sums[:, 0, :c], sums[:, 1, :c], sums[:, 2, :c], sums[:, 3, :c], sums[:, 4, 0], sums[:, 5, 0]


def _strides2(g):
    return (g.stride(0), g.stride(1)) if g is not None else (0, 0)


def _bwd(x, t, w, g_tp, g_sp, g_sq, g_ce, ignore_index: int, has_ignore: bool, act: int, offset: int,
         squared: bool, want_ce: bool):
    """``dx`` from the upstream gradients of ``tp``, ``sp`` (``(N, C)``), ``sq`` (``(N, C)``, read
    only when ``squared``) and ``ce`` (``(N,)``, only when ``want_ce``); ``None`` means zero (the
    output was not used), as does a skipped ``sq``/``ce``."""
    n, c, s = x.shape
    dx = torch.empty_like(x)
    g_sq = g_sq if squared else None
    g_ce = g_ce if want_ce else None
    if n and s:
        c_pad, block_s = _meta(c)
        flags = _flags(act, ignore_index, has_ignore, g_sq is not None, g_ce is not None, w is not None, offset)
        _overlap_bwd_kernel[(n, cdiv(s, block_s))](
            x, t, w if w is not None else x,
            *(g if g is not None else x for g in (g_tp, g_sp, g_sq, g_ce)), dx, c, s, ignore_index,
            *_strides2(g_tp), *_strides2(g_sp), *_strides2(g_sq), (g_ce.stride(0) if g_ce is not None else 0),
            C_PAD=c_pad, BLOCK_S=block_s, HAS_GTP=g_tp is not None, HAS_GSP=g_sp is not None,
            ACC64=x.dtype == torch.float64, num_warps=_WARPS, **flags)
    return dx


class _OverlapTriton(torch.autograd.Function):
    """Eager autograd of the launchers (no custom-op dispatch; see ``_softmax_ce_triton._EagerCE``)."""

    @staticmethod
    def forward(ctx, x, t, w, ignore_index: int, has_ignore: bool, act: int, offset: int, squared: bool,
                want_ce: bool, flag=None):
        # flag: written by the kernel (not differentiable, not saved)
        out = _fwd(x, t, w, ignore_index, has_ignore, act, offset, squared, want_ce, flag)
        ctx.save_for_backward(x, t, w)
        ctx.args = (ignore_index, has_ignore, act, offset, squared, want_ce)
        ctx.mark_non_differentiable(out[2], out[5])
        # unused outputs get no zero-filled gradient tensors: the kernel treats None as zero
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    def backward(ctx, g_tp, g_sp, _g_sy, g_sq, g_ce, _g_nm):
        if g_tp is None and g_sp is None and g_sq is None and g_ce is None:
            return (None,) * 10
        x, t, w = ctx.saved_tensors
        return (_bwd(x, t, w, g_tp, g_sp, g_sq, g_ce, *ctx.args),) + (None,) * 9


# Under torch.compile the launches run as opaque custom ops with the same backward.
@torch.library.custom_op("tailwise::overlap_index_fwd", mutates_args=())
def _overlap_fwd_op(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, ignore_index: int, has_ignore: bool,
                    act: int, offset: int, squared: bool, want_ce: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(o.clone() for o in _fwd(x, t, w, ignore_index, has_ignore, act, offset, squared, want_ce))


@_overlap_fwd_op.register_fake
def _(x, t, w, ignore_index, has_ignore, act, offset, squared, want_ce):
    n, c, _ = x.shape
    return (x.new_empty(n, c), x.new_empty(n, c), x.new_empty(n, c), x.new_empty(n, c),
            x.new_empty(n), x.new_empty(n))


@torch.library.custom_op("tailwise::overlap_index_bwd", mutates_args=())
def _overlap_bwd_op(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, g_tp: torch.Tensor,
                    g_sp: torch.Tensor, g_sq: torch.Tensor, g_ce: torch.Tensor, ignore_index: int,
                    has_ignore: bool, act: int, offset: int, squared: bool, want_ce: bool) -> torch.Tensor:
    return _bwd(x, t, w, g_tp, g_sp, g_sq, g_ce, ignore_index, has_ignore, act, offset, squared, want_ce)


@_overlap_bwd_op.register_fake
def _(x, t, w, g_tp, g_sp, g_sq, g_ce, ignore_index, has_ignore, act, offset, squared, want_ce):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, t, w, *args = inputs
    ctx.save_for_backward(x, t, w)
    ctx.args = tuple(args)
    ctx.set_materialize_grads(True)


def _op_backward(ctx, g_tp, g_sp, _g_sy, g_sq, g_ce, _g_nm):
    x, t, w = ctx.saved_tensors
    # (materialised gradients: the custom op takes tensors, zeros where an output was unused)
    return (_overlap_bwd_op(x, t, w, g_tp, g_sp, g_sq, g_ce, *ctx.args),) + (None,) * 8


_overlap_fwd_op.register_autograd(_op_backward, setup_context=_setup)


def overlap_index_triton(x, t, ignore_index, mode, from_logits, squared, want_ce=False, ce_weight=None,
                         validate=False):
    """Triton implementation of op ``"overlap_index"``: same contract as ``overlap_index_torch``.

    ``validate``: the target range check, done by the forward kernel as it reads the targets and
    turned into one device-side assert (the exact host check where values may be read on the
    host; the torch form while ``torch.compile`` traces).
    """
    flag = None
    if validate:
        if host_value_checks(x, t) or torch.compiler.is_compiling():
            check_class_indices(t, 2 if mode == "binary" else x.shape[1], "target", ignore_index=ignore_index)
        else:
            flag = torch.ones(1, dtype=torch.int32, device=x.device)
    x = x.contiguous()
    t = t.contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if mode == "multiclass":
        act, offset = (_ACT_SOFTMAX if from_logits else _ACT_NONE), 0
    else:
        act, offset = (_ACT_SIGMOID if from_logits else _ACT_NONE), 1
    w = None
    if want_ce and mode == "multiclass" and ce_weight is not None:
        w = ce_weight.to(device=x.device, dtype=x.dtype).contiguous()
    args = (x, t, w, 0 if ignore_index is None else int(ignore_index), ignore_index is not None, act, offset,
            bool(squared), bool(want_ce))
    if torch.compiler.is_compiling():
        tp, sp, sy, sq, ce_sum, ce_norm = _overlap_fwd_op(*args)
    else:
        tp, sp, sy, sq, ce_sum, ce_norm = _OverlapTriton.apply(*args, flag)
    if flag is not None:
        extra = "" if ignore_index is None else f" (or ignore_index={ignore_index})"
        assert_values(flag, f"target must be class indices in [0, {1 if mode == 'binary' else x.shape[1] - 1}]{extra}")
    if not squared:
        sq = None
    if not want_ce:
        ce_sum = ce_norm = None
    return tp, sp, sy, sq, (sy if squared else None), ce_sum, ce_norm
