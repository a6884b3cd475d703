"""Radial basis, cutoffs and radial MLP: values, zero at/after the cutoff, e3nn parity."""

from __future__ import annotations

import math

import pytest
import torch

from atomshard.nn import BesselBasis, PolynomialCutoff, RadialMLP, XPLORCutoff


def test_bessel_values_and_frequencies():
    basis = BesselBasis(5.0, 8, trainable=False)
    r = torch.tensor([0.7, 2.5, 4.9], dtype=torch.float64)
    got = basis(r)
    n = torch.arange(1, 9, dtype=torch.float64)
    want = (2.0 / 5.0) * torch.sin(n * math.pi / 5.0 * r[:, None]) / r[:, None]
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0)
    assert "frequencies" not in dict(basis.named_parameters())
    assert "frequencies" in dict(BesselBasis(5.0, 8, trainable=True).named_parameters())


@pytest.mark.parametrize("envelope", [PolynomialCutoff(4.0, 6), XPLORCutoff(4.0, 3.5)])
def test_cutoffs_are_zero_at_and_beyond_the_cutoff_and_one_near_zero(envelope):
    r = torch.tensor([4.0, 4.0 + 1e-12, 4.5, 9.0], dtype=torch.float64)
    assert torch.equal(envelope(r), torch.zeros(4, dtype=torch.float64))
    inside = envelope(torch.tensor([1e-3, 4.0 - 1e-6], dtype=torch.float64))
    assert abs(float(inside[0]) - 1.0) < 1e-9
    assert 0.0 <= float(inside[1]) < 1e-9


def test_polynomial_cutoff_is_smooth_at_the_cutoff():
    env = PolynomialCutoff(3.0, 6)
    r = torch.tensor([3.0 - 1e-2, 3.0 - 1e-3], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(env(r).sum(), r)
    # f, f' and f'' vanish at r_c: f' falls like (r_c - r)^2
    ratio = float(g[0] / g[1])
    assert 80 < ratio < 120, ratio
    assert abs(float(g[1])) < 1e-4


def test_xplor_is_one_below_r_on_and_rejects_bad_r_on():
    env = XPLORCutoff(5.0, 4.5)
    assert torch.equal(env(torch.tensor([0.5, 4.49])), torch.ones(2))
    with pytest.raises(ValueError, match="r_on"):
        XPLORCutoff(5.0, 5.0)


def test_radial_mlp_matches_e3nn_fully_connected_net():
    from e3nn.nn import FullyConnectedNet

    torch.manual_seed(0)
    ours = RadialMLP([8, 16, 16, 5], "silu").double()
    theirs = FullyConnectedNet([8, 16, 16, 5], torch.nn.functional.silu).double()
    for k, w in enumerate(ours.weights):
        getattr(theirs, f"layer{k}").weight.data.copy_(w.data)
    x = torch.randn(7, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-13, atol=1e-13)


def test_radial_mlp_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        RadialMLP([8, 4], "swishy")
