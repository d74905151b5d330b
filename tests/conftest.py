import os
import sys

import pytest
import torch

# dist_harness is imported by spawned ranks as a top-level module
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import HealthCheck, Phase, settings  # noqa: E402

settings.register_profile("tailwise", max_examples=30, deadline=None)
# tests/test_fuzz.py: CI runs "fuzz" (fixed examples, capped so the suite stays ~1 min on 2 cores);
# HYPOTHESIS_PROFILE=long runs it (and every other property test) with far more random examples
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fuzz", max_examples=6, deadline=None, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=_SLOW_OK)
settings.register_profile("long", max_examples=300, deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tailwise"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
