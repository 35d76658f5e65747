"""publish() of a torch.nn.Module and predict() on torch tensors. Needs torch (the [torch]
extra); skipped where it is not installed (CI installs numpy and pandas only)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_torch_module_published_and_predicted(consortium):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.rand(25, 12)
    with torch.no_grad():
        want = net(x).numpy().astype(np.float64)
    consortium.alice.publish(net, name="torch-mlp", example=x[:1])
    got = consortium.bob.predict("torch-mlp", x)  # a tensor, not an array
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-3
