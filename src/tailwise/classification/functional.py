"""Functional forms of the classification losses."""

__all__: list = []

# --- cross-entropy family, focal, class-balanced, prior-based (classification main author) ---
from .bal_bce import bal_bce_loss  # noqa: E402
from .class_balanced import class_balanced_loss, class_balanced_weights  # noqa: E402
from .cross_entropy import cross_entropy_loss, entropy_loss, kl_div_loss  # noqa: E402
from .difficulty import difficulty_loss, difficulty_weights  # noqa: E402
from .focal import focal_loss, sigmoid_focal_loss  # noqa: E402
from .iif import iif_loss, iif_weights  # noqa: E402
from .logit_adjustment import adjust_logits, balanced_softmax_loss, logit_adjusted_loss  # noqa: E402

__all__ += ["entropy_loss", "cross_entropy_loss", "kl_div_loss", "focal_loss", "sigmoid_focal_loss",
            "class_balanced_loss", "class_balanced_weights", "balanced_softmax_loss", "logit_adjusted_loss",
            "adjust_logits", "bal_bce_loss", "iif_loss", "iif_weights", "difficulty_weights", "difficulty_loss"]

# --- Equalization Losses and TADE ---
from .eqlv2 import eqlv2_grad_stats, eqlv2_loss, eqlv2_weights  # noqa: E402
from .equalized_focal import equalized_focal_grad_stats, equalized_focal_loss  # noqa: E402
from .softmax_eql import softmax_eql_grad_stats, softmax_eql_loss  # noqa: E402
from .tade import tade_inverse_prior, tade_loss, tade_test_time_weights  # noqa: E402

__all__ += ["eqlv2_loss", "eqlv2_weights", "eqlv2_grad_stats", "softmax_eql_loss", "softmax_eql_grad_stats",
            "equalized_focal_loss", "equalized_focal_grad_stats", "tade_loss", "tade_inverse_prior",
            "tade_test_time_weights"]

# --- LDAM-DRW, Seesaw, decoupled classifiers ---
from .decoupling import tau_normalize  # noqa: E402
from .ldam import drw_weights, ldam_loss, ldam_margins  # noqa: E402
from .seesaw import seesaw_detection_loss, seesaw_loss  # noqa: E402

__all__ += ["ldam_loss", "ldam_margins", "drw_weights", "seesaw_loss", "seesaw_detection_loss", "tau_normalize"]

# --- Difficulty-Net ---
from .difficulty_net import difficulty_net_driver_loss, difficulty_net_loss, difficulty_net_weights  # noqa: E402

__all__ += ["difficulty_net_loss", "difficulty_net_weights", "difficulty_net_driver_loss"]

# --- fused linear + cross-entropy ---
from .linear_cross_entropy import linear_cross_entropy_loss  # noqa: E402

__all__ += ["linear_cross_entropy_loss"]
