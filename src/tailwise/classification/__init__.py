"""classification losses."""

from . import functional  # noqa: F401

__all__: list = []

# --- Equalization Losses and TADE (eqlv2.py, softmax_eql.py, equalized_focal.py, tade.py) ---
from .eqlv2 import EQLv2Loss  # noqa: E402
from .equalized_focal import EqualizedFocalLoss  # noqa: E402
from .softmax_eql import SoftmaxEQLLoss  # noqa: E402
from .tade import TADELoss, tade_inverse_prior, tade_test_time_weights  # noqa: E402

__all__ += ["EQLv2Loss", "SoftmaxEQLLoss", "EqualizedFocalLoss", "TADELoss", "tade_inverse_prior",
            "tade_test_time_weights"]
