"""Functional forms of the classification losses."""

__all__: list = []

# --- Equalization Losses and TADE ---
from .eqlv2 import eqlv2_grad_stats, eqlv2_loss, eqlv2_weights  # noqa: E402
from .equalized_focal import equalized_focal_grad_stats, equalized_focal_loss  # noqa: E402
from .softmax_eql import softmax_eql_grad_stats, softmax_eql_loss  # noqa: E402
from .tade import tade_inverse_prior, tade_loss, tade_test_time_weights  # noqa: E402

__all__ += ["eqlv2_loss", "eqlv2_weights", "eqlv2_grad_stats", "softmax_eql_loss", "softmax_eql_grad_stats",
            "equalized_focal_loss", "equalized_focal_grad_stats", "tade_loss", "tade_inverse_prior",
            "tade_test_time_weights"]
