"""ClassAwareSampler: turn structure, per-class cycles, epoch length, sharding, determinism."""

import collections

import numpy as np
import pytest
import torch

from tailwise.data import ClassAwareSampler


def _labels():
    return torch.tensor([0] * 10 + [1] * 4 + [2] * 1 + [3] * 6)


def test_epoch_length_and_turns():
    labels = _labels()
    s = ClassAwareSampler(labels, samples_per_class=4, seed=3)
    idx = list(s)
    assert len(idx) == len(s) == 4 * 10
    lab = labels[idx].tolist()
    blocks = [lab[i:i + 4] for i in range(0, len(lab), 4)]
    # every turn is k samples of one class
    assert all(len(set(b)) == 1 for b in blocks)
    turns = [b[0] for b in blocks]
    # classes come in reshuffled passes: each pass of 4 turns is a permutation of the classes
    for i in range(0, len(turns) - 3, 4):
        assert sorted(turns[i:i + 4]) == [0, 1, 2, 3]


def test_each_class_cycles_through_its_members():
    labels = _labels()
    idx = list(ClassAwareSampler(labels, samples_per_class=4, seed=5))
    per_class = collections.defaultdict(list)
    for i in idx:
        per_class[int(labels[i])].append(i)
    for c, seq in per_class.items():
        members = sorted(np.flatnonzero(labels.numpy() == c).tolist())
        n = len(members)
        full = len(seq) // n
        for p in range(full):
            assert sorted(seq[p * n:(p + 1) * n]) == members  # no repeat before a full pass
    # class 2 has one member: all its draws are that sample
    assert set(per_class[2]) == {14}


def test_deterministic_per_epoch_and_shards_cover_epoch():
    labels = _labels()
    a = ClassAwareSampler(labels, seed=1)
    b = ClassAwareSampler(labels, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    shards = [list(ClassAwareSampler(labels, num_replicas=3, rank=r, seed=1)) for r in range(3)]
    assert all(len(s) == 14 for s in shards)
    whole = ClassAwareSampler(labels, num_replicas=3, rank=0, seed=1).global_indices().tolist()
    merged = [None] * 42
    for r, s in enumerate(shards):
        merged[r::3] = s
    assert merged == whole


def test_no_self_sharding_and_errors():
    s = ClassAwareSampler(_labels())
    assert s.num_replicas == 1 and s.rank == 0
    with pytest.raises(ValueError, match="rank"):
        ClassAwareSampler(_labels(), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="samples_per_class"):
        ClassAwareSampler(_labels(), samples_per_class=0)
    with pytest.raises(TypeError, match="labels"):
        ClassAwareSampler(torch.rand(5))
    with pytest.raises(ValueError, match="either distributed=True"):
        ClassAwareSampler(_labels(), distributed=True, num_replicas=2)
