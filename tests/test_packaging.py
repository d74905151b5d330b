"""Packaging contract: public names, import weight, one version, the CLI's --version and list."""

import importlib.metadata
import subprocess
import sys

import pytest

import tailwise
from tailwise.cli import main, plain_text

# Every public top-level name users had before the explicit __all__ (dir(tailwise) at 0.1.0).
PUBLIC_BEFORE = [
    "BCLLoss", "BMCLoss", "BNILoss", "BYOLLoss", "BalBCELoss", "BalancedL1Loss",
    "BalancedSoftmaxLoss", "CDIoULoss", "CIoULoss", "ClassBalancedLoss", "CrossEntropyLoss",
    "DCLLoss", "DCLWLoss", "DIoULoss", "DiceCELoss", "DiceLoss", "DifficultyWeightedLoss",
    "EIoULoss", "EQLv2Loss", "EntropyLoss", "EqualizedFocalLoss", "FocalEIoULoss", "FocalLoss",
    "FocalTverskyLoss", "GAILoss", "GIoULoss", "GMMFit", "IIFLoss", "IIF_VARIANTS", "InfoNCELoss",
    "IoULoss", "KLDivLoss", "L1Loss", "LogitAdjustedLoss", "MSELoss", "MemoryQueue",
    "NeuralCollapseLoss", "PAUCAtBudgetLoss", "PaCoLoss", "RecallAtQuantileLoss", "ResComLoss",
    "SigmoidFocalLoss", "SmoothAPLoss", "SmoothL1Loss", "SoftmaxEQLLoss", "SupConLoss", "TADELoss",
    "TSCLoss", "TverskyLoss", "WarmupBlend", "adjust_logits", "assign_targets", "box_convert",
    "box_iou", "boxes", "build_loss", "class_balanced_weights", "classification", "contrastive",
    "data", "describe_losses", "difficulty_weights", "distance_box_iou", "distributed", "fit_gmm",
    "functional", "generalized_box_iou", "get_box_backend", "get_loss_class", "hard_pair_mining",
    "iif_weights", "kernels", "label_bins", "linear_sum_assignment", "list_losses", "metrics",
    "ranking", "register_loss", "registry", "regression", "rescom_class_weights", "segmentation",
    "set_box_backend", "simplex_etf", "tade_inverse_prior", "tade_test_time_weights", "tsc_targets",
    "validation"
]
FAMILIES = ("boxes", "classification", "contrastive", "ranking", "regression", "segmentation")


def test_no_public_name_was_dropped():
    missing = [n for n in PUBLIC_BEFORE if not hasattr(tailwise, n)]
    assert not missing


def test_all_is_explicit_complete_and_resolvable():
    assert len(tailwise.__all__) == len(set(tailwise.__all__))
    for fam in FAMILIES:
        family_all = getattr(tailwise, fam).__all__
        assert set(family_all) <= set(tailwise.__all__), fam
        for name in family_all:
            assert getattr(tailwise, name) is getattr(getattr(tailwise, fam), name)
    for name in tailwise.__all__:
        assert hasattr(tailwise, name), name
    # the star-import of the package gives exactly __all__
    namespace = {}
    exec("from tailwise import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(tailwise.__all__)


def test_import_stays_light():
    code = ("import sys, tailwise; heavy = [m for m in ('torchmetrics', 'lightning', 'matplotlib', 'sklearn', "
            "'yaml', 'scipy', 'triton') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_one_version_source():
    from tailwise._version import __version__

    assert tailwise.__version__ == __version__
    assert importlib.metadata.version("tailwise") == __version__


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tailwise {tailwise.__version__}"


def test_cli_list_is_plain_text(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cross_entropy" in out and "balanced_softmax" in out
    for markup in ("`", ":func:", ":class:", ":math:", ":meth:"):
        assert markup not in out, markup


def test_plain_text_roles():
    assert plain_text(":class:`~torch.nn.CrossEntropyLoss` and :math:`\\gamma`") == "CrossEntropyLoss and \\gamma"
    assert plain_text(":py:func:`tailwise.functional.giou_loss`") == "tailwise.functional.giou_loss"
    assert plain_text("``reduction=\"sum\"``") == 'reduction="sum"'
