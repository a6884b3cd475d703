"""bf16 training: float32 master weights, a bf16 body in the forward/backward pass."""

from __future__ import annotations

import pytest
import torch

from atomshard.errors import InputError
from atomshard.train.config import RecipeConfig
from atomshard.train.data import labelled_from_atoms
from atomshard.train.study import train_steps
from tests.train.train_cases import tiny_config, tiny_frames


def test_bf16_recipe_is_validated():
    recipe = RecipeConfig(precision="bfloat16")
    assert recipe.body_dtype == "float32" and recipe.compute_dtype == "bfloat16"
    assert RecipeConfig().compute_dtype is None
    with pytest.raises(InputError, match=r"training\.precision='float16'"):
        RecipeConfig(precision="float16")


def test_bf16_steps_decrease_the_loss_and_track_float32():
    frames = [labelled_from_atoms(a, f"frame {k}") for k, a in enumerate(tiny_frames(4, seed=1))]
    cfg = tiny_config(dtype="float32")
    kw = dict(n_steps=8, batch_size=4, lr=0.01)  # one full batch: the same loss every step
    f32 = train_steps(None, frames, cfg, **kw)["loss"]
    bf16 = train_steps(None, frames, cfg, compute_dtype="bfloat16", **kw)["loss"]
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16[-1] < 0.7 * bf16[0]
    # bf16 keeps ~3 significant digits: the trajectories agree to a few per cent
    assert bf16 == pytest.approx(f32, rel=0.05)
    assert bf16 != f32  # the body did run in bf16


def test_bf16_forward_casts_only_the_float32_body():
    from atomshard.models.potential import NequIPPotential
    from atomshard.train.batch import collate
    from atomshard.train.parallel import ForceModel

    frames = [labelled_from_atoms(a, "f").with_edges(2.5) for a in tiny_frames(2, seed=2)]
    torch.manual_seed(0)
    model = NequIPPotential.from_config(tiny_config(dtype="float32"))
    fm = ForceModel(model, stress=True, compute_dtype=torch.bfloat16)
    energy, forces, stress = fm(collate(frames))
    assert energy.dtype == forces.dtype == stress.dtype == torch.float64
    (energy.sum() + forces.square().sum()).backward()
    assert model.body_dtype == torch.float32  # master weights untouched
    for name, p in model.named_parameters():
        if p.dtype == torch.float32 and p.grad is not None:
            assert p.grad.dtype == torch.float32 and bool(torch.isfinite(p.grad).all()), name
    ref = ForceModel(model, stress=True)(collate(frames))
    torch.testing.assert_close(energy, ref[0], rtol=2e-3, atol=0.0)
