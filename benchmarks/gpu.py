"""GPU benchmark: forward+backward time (median of ``triton.testing.do_bench``) and peak memory
for every hot loss against its peers, at the sizes named in the CUDA issues.

Cases live in ``benchmarks/gpu_<family>.py`` modules, each exposing ``cases(quick: bool)``, a list
of :class:`Case`. This script collects them, runs each implementation on fresh inputs, checks the
tailwise result against the case's reference, prints a markdown table and writes JSON.

    python benchmarks/gpu.py                    # every family, full sizes
    python benchmarks/gpu.py --only softmax     # families whose module name contains "softmax"
    python benchmarks/gpu.py --quick            # small sizes (smoke test; also runs on CPU)

A peer that is not installed (monai, liger_kernel, pytorch_metric_learning, torchvision) is
skipped with a note; an implementation that runs out of memory is reported as "OOM".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import pathlib
import platform
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass
class Impl:
    """One implementation: ``make()`` builds fresh inputs; ``run(inputs)`` returns the loss."""
    name: str
    run: Callable
    needs: Optional[str] = None        # module that must import (a peer), else skipped
    env: Optional[Dict[str, str]] = None  # e.g. {"TAILWISE_KERNELS": "torch"}
    backward: bool = True


@dataclasses.dataclass
class Case:
    family: str
    size: str
    make: Callable                     # (device, dtype) -> dict of inputs (leaf tensors requiring grad)
    impls: List[Impl]
    dtype: torch.dtype = torch.float32
    note: str = ""


def _available(module: Optional[str]) -> bool:
    if module is None:
        return True
    try:
        importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001
        return False


def _grad_leaves(inputs: dict):
    return [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.requires_grad]


def time_impl(case: Case, impl: Impl, device: str, warmup: int = 25, rep: int = 100) -> dict:
    import os
    old_env = {k: os.environ.get(k) for k in (impl.env or {})}
    os.environ.update(impl.env or {})
    try:
        inputs = case.make(device, case.dtype)
        leaves = _grad_leaves(inputs)

        def step():
            for leaf in leaves:
                leaf.grad = None
            loss = impl.run(inputs)
            if impl.backward and loss.requires_grad:
                loss.backward()
            return loss

        value = float(step().detach().float())
        graph_ms = None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            from triton.testing import do_bench
            ms = do_bench(step, warmup=warmup, rep=rep, return_mode="median")
            graph_ms = _graph_ms(step, leaves, warmup, rep)
        else:
            peak = float("nan")
            t0 = time.perf_counter()
            for _ in range(3):
                step()
            ms = (time.perf_counter() - t0) / 3 * 1e3
        return {"ms": ms, "graph_ms": graph_ms, "peak_mib": peak / 2**20, "value": value}
    except torch.cuda.OutOfMemoryError:
        return {"ms": None, "peak_mib": None, "value": None, "error": "OOM"}
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if device == "cuda":
            torch.cuda.empty_cache()


def _graph_ms(step, leaves, warmup: int, rep: int):
    """Median time of one fwd+bwd replayed from a CUDA graph (no Python or launch overhead),
    or ``None`` when capture fails (the error is the point: every loss must capture)."""
    from triton.testing import do_bench
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for leaf in leaves:
            leaf.grad = None
        with torch.cuda.graph(graph):
            loss = step()
        del loss
        ms = do_bench(graph.replay, warmup=warmup, rep=rep, return_mode="median")
        graph.reset()  # give the graph's private memory pool back before the next case
        return ms
    except Exception as exc:  # noqa: BLE001 - reported in the table
        print(f"  CUDA graph capture failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        return None
    finally:
        import gc
        gc.collect()
        torch.cuda.empty_cache()


def collect(only: Optional[str], quick: bool) -> List[Case]:
    sys.path.insert(0, str(HERE))
    out: List[Case] = []
    for path in sorted(HERE.glob("gpu_*.py")):
        if only and not any(o in path.stem for o in only.split(",")):
            continue
        out.extend(importlib.import_module(path.stem).cases(quick))
    return out


def versions(device: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu"}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        info["triton"] = None
    if device == "cuda":
        info["device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated substrings of gpu_<family>.py names")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default="gpu-bench.json")
    args = ap.parse_args(argv)
    info = versions(args.device)
    rows = []
    for case in collect(args.only, args.quick):
        for impl in case.impls:
            if not _available(impl.needs):
                rows.append({"family": case.family, "size": case.size, "impl": impl.name, "skipped": f"{impl.needs} not installed"})
                continue
            r = time_impl(case, impl, args.device)
            r.update(family=case.family, size=case.size, impl=impl.name, dtype=str(case.dtype).replace("torch.", ""))
            rows.append(r)
            print(json.dumps(r), flush=True)
    pathlib.Path(args.json).write_text(json.dumps({"versions": info, "rows": rows}, indent=1))
    print(f"\n{info}\n")
    print("| family | size | dtype | implementation | fwd+bwd ms (eager) | fwd+bwd ms (CUDA graph) | extra peak MiB | loss |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['family']} | {r['size']} | | {r['impl']} | skipped: {r['skipped']} | | | |")
        elif r.get("error"):
            print(f"| {r['family']} | {r['size']} | {r['dtype']} | {r['impl']} | {r['error']} | | | |")
        else:
            g = "capture failed" if r.get("graph_ms") is None else f"{r['graph_ms']:.3f}"
            print(f"| {r['family']} | {r['size']} | {r['dtype']} | {r['impl']} | {r['ms']:.3f} | {g} | "
                  f"{r['peak_mib']:.0f} | {r['value']:.6g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
