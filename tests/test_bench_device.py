"""--device resolution and the environment every run records."""

import argparse

import pytest
import torch

from tailwise.bench import BenchInputError
from tailwise.bench._device import describe_environment, environment, resolve_device


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(argparse.Namespace(device="auto")) == "cpu"
    assert resolve_device(argparse.Namespace()) == "cpu"
    with pytest.raises(BenchInputError, match="--device cuda: no CUDA device is available"):
        resolve_device(argparse.Namespace(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(argparse.Namespace(device="auto")) == "cuda"
    assert resolve_device(argparse.Namespace(device="cpu")) == "cpu"


def test_environment_and_its_description():
    env = environment("cpu")
    assert env["torch"] == torch.__version__ and env["tailwise"] and "gpu" not in env
    records = [{"device": "cpu", "device_name": "cpu", "env": env}]
    text = describe_environment(records)
    assert text.startswith("device cpu; torch ") and "tailwise" in text and "CUDA" not in text
    gpu = [{"device": "cuda", "device_name": "NVIDIA H100", "env": {**env, "cuda": "12.8", "gpu": "NVIDIA H100"}}]
    assert "device NVIDIA H100" in describe_environment(gpu) and "CUDA 12.8" in describe_environment(gpu)
