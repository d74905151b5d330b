"""The DIoU-simulation bench task, run tiny through the CLI."""

import json

import torch

from tailwise.bench.boxes import make_cases, simulate
from tailwise.cli import main


def test_cases_follow_the_paper_layout():
    anchors, targets = make_cases(2, seed=0)
    assert anchors.shape == targets.shape == (2 * 343, 4)
    areas_t = targets[:, 2] * targets[:, 3]
    torch.testing.assert_close(areas_t, torch.ones(686))  # targets have area 1
    assert torch.all(targets[:, :2] == 10.0)
    # anchor areas are the 7 scales times the target's area
    scales = sorted({round(v, 2) for v in (anchors[:, 2] * anchors[:, 3]).tolist()})
    assert scales == [0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0]
    dist = (anchors[:, :2] - 10.0).norm(dim=1)
    assert float(dist.max()) <= 3.0 + 1e-5


def test_overlapping_anchor_converges_and_disjoint_iou_anchor_stalls():
    anchors = torch.tensor([[10.2, 10.1, 1.2, 0.9], [13.0, 10.0, 1.0, 1.0]])
    targets = torch.tensor([[10.0, 10.0, 1.0, 1.0], [10.0, 10.0, 1.0, 1.0]])
    res = simulate("iou", anchors, targets, 60)
    assert res["final_no_overlap_fraction"] == 0.5  # the disjoint anchor never moves
    res_d = simulate("diou", anchors, targets, 200)
    assert res_d["final_no_overlap_fraction"] == 0.0
    assert res_d["final_error"] < 0.1 * res_d["errors"][0]


def test_cli_runs_tiny_and_writes_results_and_report(tmp_path):
    out = tmp_path / "bench"
    rc = main(["bench", "boxes", "--out", str(out), "--quiet", "--points", "1", "--epochs", "10",
               "--losses", "iou,giou,diou,ciou", "--seeds", "0,1"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 8
    assert {r["loss"] for r in records} == {"iou", "giou", "diou", "ciou"}
    for r in records:
        assert r["task"] == "boxes" and r["points"] == 1 and r["iterations"] == 10
        assert len(r["errors"]) == 10 and r["n_cases"] == 343
    report = (out / "report.md").read_text()
    assert "## Boxes (DIoU simulation)" in report
    assert "| giou |" in report and "ordering" in report
    assert (out / "boxes_simulation.png").exists()
    # resumable: a second run executes nothing new
    assert main(["bench", "boxes", "--out", str(out), "--quiet", "--points", "1", "--epochs", "10",
                 "--losses", "iou,giou,diou,ciou", "--seeds", "0,1"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 8


def test_cli_rejects_non_box_loss(tmp_path, capsys):
    rc = main(["bench", "boxes", "--out", str(tmp_path), "--quiet", "--losses", "mse"])
    assert rc == 2
    assert "not a box loss" in capsys.readouterr().err
