"""Checks shared by the tests of several scripts."""

import numpy as np
import pytest
import torch


def assert_orthogonal_init(layer: torch.nn.Module, gain: float):
    """Weights orthogonal with scale gain (W W^T = gain^2 I on the smaller side), biases zero."""
    w = layer.weight.detach().double().flatten(1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(w.shape)), atol=1e-5)
    assert torch.all(layer.bias == 0)


def one_line_error(capsys, run) -> str:
    """run() stops with exit code 2 and one line on stderr starting "error: "; returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        run()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]
