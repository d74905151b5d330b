import os
import sys

import pytest
import torch

# dist_harness is imported by spawned ranks as a top-level module
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import settings  # noqa: E402

settings.register_profile("tailwise", max_examples=30, deadline=None)
settings.load_profile("tailwise")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
