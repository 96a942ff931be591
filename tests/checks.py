"""Checks shared by the tests of several scripts."""

import numpy as np
import torch


def assert_orthogonal_init(layer: torch.nn.Module, gain: float):
    """Weights orthogonal with scale gain (W W^T = gain^2 I on the smaller side), biases zero."""
    w = layer.weight.detach().double().flatten(1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(w.shape)), atol=1e-5)
    assert torch.all(layer.bias == 0)
