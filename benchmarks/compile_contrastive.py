"""Compile the contrastive Triton kernels for a GPU target without a GPU, and report their resources.

For each tile configuration the dispatcher can pick (``_config`` of
``tailwise.kernels._contrastive_triton``) this builds the kernel with Triton's own compiler and
ptxas for ``--arch`` (default sm_90, Hopper) and prints registers per thread, spill stack and
shared memory from ``cuobjdump --dump-resource-usage``. A configuration that does not compile,
spills kilobytes or needs more than 227 KB of shared memory is a bug to fix before timing.

    python benchmarks/compile_contrastive.py                 # every default configuration
    python benchmarks/compile_contrastive.py --only bf16     # names containing "bf16"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import tailwise.kernels._contrastive_triton as kt

_PTR = {"fp32": "*fp32", "bf16": "*bf16"}
_COMMON = {"SELF": "*i32", "ALAB": "*i32", "CLAB": "*i32", "CB": "*fp32", "SB": "*fp32", "PW": "*fp32"}
_FLAGS = {"KS": 1, "HAS_LAB": True, "HAS_CB": False, "HAS_SB": False, "HAS_PW": False}


def _source(kind: str, dt: str, prec: str, bm: int, bn: int, bd: int) -> ASTSource:
    sig = {"A": _PTR[dt], "C": _PTR[dt], **_COMMON}
    const = dict(_FLAGS)
    if kind == "fwd":
        fn = kt._rows_fwd
        sig.update({"LSE": "*fp32", "PDOT": "*fp32", "PCNT": "*fp32", "M": "i32", "L": "i32", "D": "i32",
                    "stride_a": "i32", "stride_c": "i32", "scale_log2": "fp32"})
        const["POS"] = True
    else:
        fn = kt._rows_bwd_contrast if kind == "bwd_contrast" else kt._rows_bwd_anchor
        out = "DC" if kind == "bwd_contrast" else "DA"
        sig.update({"LSE": "*fp32", "GLSE": "*fp32", "GDOT": "*fp32", out: _PTR[dt], "M": "i32", "L": "i32",
                    "D": "i32", "stride_a": "i32", "stride_c": "i32", "stride_" + out.lower(): "i32",
                    "scale_log2": "fp32", "scale": "fp32"})
        const["HAS_GDOT"] = True
        if kind != "bwd_contrast":
            const["SYM"] = kind == "bwd_sym"
    const.update({"PREC": prec, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd})
    for k in const:
        sig[k] = "constexpr"
    return ASTSource(fn, sig, const)


def _resources(kernel) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    line = next((l.strip() for l in out.splitlines() if "REG:" in l), "?")
    return f"{line.split(' SHARED')[0]} shared={kernel.metadata.shared}"


def configs(sms: int):
    """(name, kind, dtype, precision, BLOCK_M, BLOCK_N, BLOCK_D, warps, stages) the dispatcher picks."""
    class _Dev:
        type = "cuda"
    kt._num_sms = lambda device: sms  # noqa: E731 - the rules only need the SM count
    out = []
    for dt, torch_dt, prec in (("fp32", kt.torch.float32, "tf32x3"), ("fp32", kt.torch.float32, "tf32"),
                               ("bf16", kt.torch.bfloat16, "tf32")):
        for d in ((128,) if dt == "fp32" else (128, 256)):
            for m in (4096, 8192, 32768):
                bm, bn, w, s = kt._config("fwd", m, d, torch_dt, prec, _Dev)
                out.append((f"fwd {dt} {prec} D={d} M={m}", "fwd", dt, prec, bm, bn, d, w, s))
                bm, bn, w, s = kt._config("bwd", m, d, torch_dt, prec, _Dev)
                for kind in ("bwd_sym", "bwd_anchor"):
                    out.append((f"{kind} {dt} {prec} D={d} M={m}", kind, dt, prec, bm, bn, d, w, s))
                out.append((f"bwd_contrast {dt} {prec} D={d} L={m}", "bwd_contrast", dt, prec, bn, bm, d, w, s))
    seen, unique = set(), []
    for c in out:  # many sizes share a configuration
        if c[1:] not in seen:
            seen.add(c[1:])
            unique.append(c)
    return unique


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--sms", type=int, default=132, help="SM count the tile rules assume (H100 SXM: 132)")
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    for name, kind, dt, prec, bm, bn, bd, warps, stages in configs(args.sms):
        if args.only and args.only not in name:
            continue
        label = f"{name}: {bm}x{bn}x{bd} warps={warps} stages={stages}"
        try:
            k = triton.compile(_source(kind, dt, prec, bm, bn, bd), target=target,
                               options={"num_warps": warps, "num_stages": stages})
            print(f"{label}: {_resources(k)}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"{label}: FAILED {type(exc).__name__}: {str(exc).splitlines()[-1][:200]}", flush=True)


if __name__ == "__main__":
    main()
