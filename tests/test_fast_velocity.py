"""galnb.fast_velocity: the sampler's folded network equals the plain one, and its divergence is exact."""

import pytest
import torch
from torch.func import jacrev, vmap

from galnb.cfm import CFM
from galnb.fast_velocity import FoldedVelocity, chunk_rows


def test_chunks_are_cache_sized_on_cpu_and_shrink_with_tangents():
    assert chunk_rows(False) == 2048 and chunk_rows(False, tangents=5) == 4096 // 6
    assert chunk_rows(True, tangents=5) == (1 << 18) // 6


def test_folded_velocity_and_its_divergence_pass_equal_the_full_network():
    model = CFM(5, 5, hidden=16, depth=3).double()
    cond = torch.randn(4, 5, dtype=torch.double)
    theta = torch.randn(4, 6, 5, dtype=torch.double)
    bias = model.net.context_bias(model.encode(cond))
    full = model.velocity(0.37, theta.reshape(-1, 5), cond.repeat_interleave(6, 0)).reshape(4, 6, 5)
    velocity = FoldedVelocity(model.net, 4 * 6)
    torch.testing.assert_close(velocity(0.37, theta, bias), full)
    torch.testing.assert_close(velocity.with_divergence(0.37, theta, bias)[0], full)


@pytest.mark.parametrize("activation", ["silu", "tanh", "softplus"])
def test_folded_velocity_equals_full_network_for_every_chunk_it_is_reused_on(activation):
    torch.manual_seed(3)
    model = CFM(5, 4, hidden=20, depth=3, activation=activation).double()  # 21 columns pad to 32
    velocity = model.net.folded(4 * 6)
    for b, n in [(4, 6), (1, 6), (3, 5)]:  # a full chunk, then smaller ones in the same buffers
        cond, theta = torch.randn(b, 4, dtype=torch.double), torch.randn(b, n, 5, dtype=torch.double)
        full = model.velocity(0.8, theta.reshape(-1, 5), cond.repeat_interleave(n, 0)).reshape(b, n, 5)
        torch.testing.assert_close(velocity(0.8, theta, model.net.context_bias(model.encode(cond))), full)
    with pytest.raises(ValueError, match="25 draws in one call; .* at most 24"):
        velocity(0.8, torch.zeros(5, 5, 5, dtype=torch.double), torch.zeros(5, 20, dtype=torch.double))


@pytest.mark.parametrize("activation", ["silu", "tanh", "softplus"])
def test_exact_divergence_matches_autograd_and_finite_differences(activation):
    torch.manual_seed(1)
    model = CFM(3, 2, hidden=8, depth=2, activation=activation).double()
    cond = torch.randn(2, 2, dtype=torch.double)
    theta = torch.randn(2, 4, 3, dtype=torch.double)
    bias = model.net.context_bias(model.encode(cond))
    velocity = FoldedVelocity(model.net, 2 * 4)
    _, div = velocity.with_divergence(0.6, theta, bias)

    def v(x, c):
        return model.velocity(0.6, x[None], c[None])[0]

    jac = vmap(jacrev(v))(theta.reshape(-1, 3), cond.repeat_interleave(4, 0))
    torch.testing.assert_close(div.reshape(-1), jac.diagonal(dim1=-2, dim2=-1).sum(-1))
    eps, fd = 1e-6, torch.zeros(2, 4, dtype=torch.double)
    for j in range(3):
        step = torch.zeros(3, dtype=torch.double)
        step[j] = eps
        fd += (velocity(0.6, theta + step, bias) - velocity(0.6, theta - step, bias))[..., j] / (2 * eps)
    torch.testing.assert_close(div, fd, atol=1e-7, rtol=1e-6)
