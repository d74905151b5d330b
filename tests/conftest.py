import os
import sys

import pytest
import torch

# Triton chooses interpreter or compiler when it is first imported, and collecting the doctests of
# src/tailwise imports the Triton kernel modules: on machines without CUDA (CI) pick the
# interpreter before that, so the kernel tests run the kernels on CPU tensors. (Tests of a forced
# Triton backend on CPU without the interpreter delete the variable themselves.)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# dist_harness is imported by spawned ranks as a top-level module
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import settings  # noqa: E402

settings.register_profile("tailwise", max_examples=30, deadline=None)
settings.load_profile("tailwise")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
