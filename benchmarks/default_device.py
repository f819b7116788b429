"""A pytest plugin of benchmarks/gpu_check.sh: torch's default device from $DEVICE (e.g. cuda), so that the tests'
models and tensors made without a device land there (tensors made on an explicit device stay where they are)."""

import os

import torch


def pytest_configure(config) -> None:
    torch.set_default_device(os.environ.get("DEVICE", "cpu"))
