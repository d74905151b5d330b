"""Run a test module's Triton kernels in Triton's interpreter (CPU tensors).

Triton chooses interpreter or compiler when it is first imported. A process that imported it
for compiling (the usual test run) runs the module again in a fresh interpreted process; in that
process the module's tests run, in the compiling one they skip (except ``keep`` tests).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

tl = pytest.importorskip("triton.language")

INTERPRETED = type(tl.sum).__name__ == "InterpretedFunction"
COMPILER_PROCESS_TESTS = ("test_module_in_the_triton_interpreter", "test_kernels_compile_for_hopper")


@pytest.fixture(autouse=True)
def interpreter(request, monkeypatch):
    """Run the Triton kernels in the interpreter (CPU tensors)."""
    if not INTERPRETED:
        if request.node.originalname not in COMPILER_PROCESS_TESTS:
            pytest.skip("runs in the interpreted subprocess of test_module_in_the_triton_interpreter")
        return  # (never set TRITON_INTERPRET here: a kernel module imported now would be interpreted)
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def run_interpreted(module_file: str) -> None:
    """Run ``module_file``'s tests with ``TRITON_INTERPRET=1`` in a fresh process; assert they pass."""
    if INTERPRETED:
        pytest.skip("this process interprets Triton: the tests run here")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    env.pop("TAILWISE_KERNELS", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          module_file], capture_output=True, text=True, env=env, timeout=1800)
    assert res.returncode == 0 and " passed" in res.stdout, res.stdout[-4000:] + res.stderr[-2000:]
