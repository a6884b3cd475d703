"""Force-loss training through the fused convolution (double backward) equals the e3nn path.

A training step differentiates the forces (``create_graph``); the fused chunks' first
backward is then a ``_ChunkGrad`` whose own backward runs the fused kernels again. The
parameter gradients of an energy + force (+ stress) loss of a batch must equal those of
the e3nn ``TensorProduct`` reference: to 1e-10 relative in float64 on periodic,
triclinic and molecular structures, in both layouts, and for SevenNet-0 fine-tuning; to
round-off in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.models.potential import NequIPPotential, preset
from atomshard.testing import grad_fn_names, random_structure
from atomshard.train.batch import collate
from atomshard.train.data import labelled_from_atoms
from atomshard.train.loss import Counts, LossWeights, batch_loss
from atomshard.train.parallel import ForceModel, as_prediction, backward_to_parameters

SPECIES = (8, 14)


def _frames(case: str, cutoff: float, seed: int = 0):
    """Two labelled structures (random labels) of one kind, carrying their edges."""
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    out = []
    for k, n in enumerate((5, 7)):
        atoms = random_structure(
            SPECIES, n, periodic=case != "molecule", triclinic=case == "triclinic",
            density=0.05, seed=seed + k,
        )  # fmt: skip
        stress = rng.normal(0.0, 0.01, 6) if case != "molecule" else None
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(rng.normal(-5.0 * n, 1.0)),
            forces=rng.normal(0.0, 1.0, (n, 3)), stress=stress,
        )  # fmt: skip
        out.append(labelled_from_atoms(atoms, f"{case} {k}").with_edges(cutoff))
    return out


def _model(dtype: str, layout: str) -> NequIPPotential:
    torch.manual_seed(0)
    config = preset("si-config", species=SPECIES, channels=4, l_max=2, n_layers=3,
                    cutoff=3.5, avg_num_neighbors=6.0, dtype=dtype)  # fmt: skip
    model = NequIPPotential.from_config(config)
    model.set_convolution(layout=layout)
    return model


def _loss_grads(model: NequIPPotential, frames, kind: str, stress: bool, **options):
    """Parameter gradients of one training step's loss, and the loss's autograd names."""
    model.set_convolution(kind, **options)
    model.zero_grad(set_to_none=True)
    fm = ForceModel(model, stress=stress)
    batch = collate(frames)
    pred = as_prediction(fm(batch, True))
    loss = batch_loss(pred, batch, Counts.of(frames), LossWeights(1.0, 1.0, float(stress)))
    names = grad_fn_names(loss)
    backward_to_parameters(loss, fm)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
    return grads, names


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("layout", ["nodes", "edges"])
@pytest.mark.parametrize("case", ["periodic", "triclinic", "molecule"])
def test_force_loss_gradients_float64(case, layout):
    model = _model("float64", layout)
    frames = _frames(case, model.cutoff)
    stress = case != "molecule"
    ref, ref_names = _loss_grads(model, frames, "e3nn", stress)
    assert "_ChunkGradBackward" not in ref_names
    for options in (
        {},
        {"chunk_edges": 17, "recompute": False},
        {"chunk_edges": 17, "recompute": True},
    ):
        got, names = _loss_grads(model, frames, "fused", stress, **options)
        # the first backward is the fused one, differentiable by its own backward
        assert "_ChunkGradBackward" in names
        # stored chunks (one, or several feeding the row sink) share the radial MLP's
        # autograd graph between the force backward and the loss's (_TriFunction)
        assert ("_TriFunctionBackward" in names) == (not options.get("recompute")), options
        assert _rel(got, ref) <= 1e-10, (case, layout, options)


def test_force_loss_gradients_float32():
    model = _model("float32", "nodes")
    frames = _frames("triclinic", model.cutoff, seed=3)
    ref, _ = _loss_grads(model, frames, "e3nn", True)
    got, _ = _loss_grads(model, frames, "fused", True)
    assert _rel(got, ref) <= 1e-4


@pytest.mark.parametrize("layout", ["nodes", "edges"])
def test_chunk_second_derivatives_match_autograd(layout):
    """Every second derivative through ``_ChunkGrad`` — for the node features, the
    spherical harmonics, the radial basis and the MLP's matrices, also those a training
    step does not ask for (Y's) — equals autograd through the chunk's own ops
    (``chunk_backward="autograd"``), float64, several chunks."""
    model = _model("float64", layout)
    layer = model.interaction(1)
    frames = _frames("triclinic", model.cutoff, seed=5)
    graph = collate(frames[:1]).graph
    cell = torch.as_tensor(frames[0].structure.cell)
    vec = (
        graph.positions[graph.src]
        + graph.shifts.to(torch.float64) @ cell
        - graph.positions[graph.dst]
    )
    radial, sh = model.edge_features(vec)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(graph.n_atoms, layer.irreps_in.dim, dtype=torch.float64, generator=gen)
    inputs = [h.requires_grad_(), sh.detach().requires_grad_(), radial.detach().requires_grad_()]
    mats = list(layer.radial.weights)
    probe = [torch.randn(t.shape, dtype=torch.float64, generator=gen) for t in inputs + mats]
    outer = torch.randn(graph.n_atoms, layer.fused.dim_out, dtype=torch.float64, generator=gen)

    def second(mode: str):
        layer.fused.chunk_backward = mode
        out = layer.fused(*inputs, layer.radial, graph.src, graph.dst, chunk_edges=40)
        first = torch.autograd.grad((out * outer).sum(), inputs + mats, create_graph=True)
        probed = sum((g * p).sum() for g, p in zip(first, probe))
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(probed, inputs + mats)])

    ref = second("autograd")
    got = second("manual")
    layer.fused.chunk_backward = "manual"
    assert _rel(got, ref) <= 1e-10


def test_sevennet0_finetune_gradients(tmp_path):
    """SevenNet-0 fine-tuning: force + stress loss gradients of the converted model, fused
    against e3nn, float64, an 8-atom silicon cell and a 6-atom Si-O cluster."""
    pytest.importorskip("sevenn", reason="sevenn (atomshard[sevennet]) is not installed")
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from atomshard.models.checkpoint import load_model
    from atomshard.models.potential.sevennet import (
        convert_sevennet_checkpoint,
        find_sevennet_checkpoint,
    )

    target = convert_sevennet_checkpoint(find_sevennet_checkpoint("SevenNet-0"), tmp_path / "s0.pt")
    model = load_model(target, dtype=torch.float64)
    assert isinstance(model, NequIPPotential)
    model.train()
    rng = np.random.default_rng(2)
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.positions += rng.normal(0.0, 0.05, si.positions.shape)
    cluster = random_structure((8, 14), 6, periodic=False, seed=1)
    frames = []
    for k, atoms in enumerate((si, cluster)):
        n = len(atoms)
        atoms.calc = SinglePointCalculator(
            atoms, energy=-5.0 * n, forces=rng.normal(0.0, 0.5, (n, 3)),
            stress=rng.normal(0.0, 0.01, 6) if k == 0 else None,
        )  # fmt: skip
        frames.append(labelled_from_atoms(atoms, f"s{k}").with_edges(model.cutoff))
    for layout in ("nodes", "edges"):
        model.set_convolution(layout=layout)
        ref, _ = _loss_grads(model, frames, "e3nn", True)
        got, names = _loss_grads(model, frames, "fused", True)
        assert "_ChunkGradBackward" in names
        assert _rel(got, ref) <= 1e-10, layout
