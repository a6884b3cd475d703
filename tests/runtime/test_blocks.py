"""Block-by-block evaluation (atomshard.runtime.blocks) gives the whole graph's numbers.

Energies, per-atom energies, forces and stress of a rattled periodic quartz supercell and
of a cluster, split into 2..16 blocks, match one evaluation of the whole graph to float64
round-off (measured ~1e-15); the shell-by-shell shrinking of the NequIP layers gives the
same numbers as the plain halo, and a halo one shell too thin does not (the test can fail).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.io import read_structures
from atomshard.md.config import MDConfig
from atomshard.models import compute_properties
from atomshard.models.pair import LennardJones
from atomshard.models.potential import NequIPPotential, preset
from atomshard.runtime.blocks import (
    auto_max_atoms,
    block_graph,
    compute_properties_in_blocks,
    dst_pointer,
    evaluate,
    plan_blocks,
    resolve_max_atoms,
)


@pytest.fixture(scope="module")
def model() -> NequIPPotential:
    torch.manual_seed(0)
    cfg = preset("si-config", species=(8, 14), channels=6, n_layers=3, dtype="float64")
    return NequIPPotential.from_config(cfg).eval()


@pytest.fixture(scope="module")
def quartz(model) -> AtomicGraph:
    atoms = read_structures("quartz", repeat=(4, 4, 3))[0]  # 432 atoms, 49 Å across
    atoms.rattle(0.05, seed=1)
    return AtomicGraph.from_ase(atoms, model.cutoff)


@pytest.fixture(scope="module")
def one() -> NequIPPotential:
    """One layer: a halo thin enough for block limits on this cell (three layers' halo
    spans all of it)."""
    torch.manual_seed(2)
    cfg = preset("si-config", species=(8, 14), channels=4, n_layers=1, dtype="float64")
    return NequIPPotential.from_config(cfg).eval()


@pytest.fixture(scope="module")
def whole(model, quartz):
    return compute_properties(model, quartz, forces=True, stress=True)


def _same(got, want, rtol: float = 1e-12) -> None:
    for name in ("energy", "energies", "forces", "stress"):
        a, b = getattr(got, name), getattr(want, name)
        if b is None:
            assert a is None, name
            continue
        scale = float(b.abs().max().clamp_min(1e-300))
        assert float((a - b).abs().max()) <= rtol * scale, (name, float((a - b).abs().max()))


@pytest.mark.parametrize("n_blocks", [2, 5, 16])
def test_blocks_match_the_whole_graph(model, quartz, whole, n_blocks):
    _same(compute_properties_in_blocks(model, quartz, n_blocks=n_blocks), whole)


def test_blocks_with_layer_checkpoints_and_recomputed_chunks(model, quartz, whole):
    """What a block of a large system runs with: checkpointed layers, chunked edges."""
    model.set_convolution(checkpoint=True, chunk_edges=700, recompute=True)
    try:
        _same(compute_properties_in_blocks(model, quartz, n_blocks=3), whole)
    finally:
        model.set_convolution(checkpoint="auto", chunk_edges="auto", recompute="auto")


def test_any_split_and_the_grid_partitioner_give_the_same_numbers(model, quartz, whole):
    random = torch.as_tensor(np.random.default_rng(0).integers(0, 3, quartz.n_atoms))
    _same(compute_properties_in_blocks(model, quartz, part=random), whole)
    _same(compute_properties_in_blocks(model, quartz, n_blocks=4, method="grid"), whole)
    with pytest.raises(InputError, match="part has shape"):
        compute_properties_in_blocks(model, quartz, part=random[:-1])


def test_plain_halo_matches_and_a_thin_halo_does_not(model, quartz, whole, monkeypatch):
    """Without the shell shrinking every layer runs on the whole block graph: same numbers.
    With one shell fewer than the model's layers the outer atoms' messages are missing."""
    monkeypatch.setattr(model, "takes_shells", False)
    _same(compute_properties_in_blocks(model, quartz, n_blocks=5), whole)
    monkeypatch.setattr(model, "n_hops", model.n_hops - 1)
    thin = compute_properties_in_blocks(model, quartz, n_blocks=5)
    assert float((thin.forces - whole.forces).abs().max()) > 1e-6
    monkeypatch.setattr(model, "takes_shells", True)
    with pytest.raises(ValueError, match="shells for 2 layers given to a 3-layer model"):
        compute_properties_in_blocks(model, quartz, n_blocks=5)


@pytest.mark.parametrize("convolution", ["fused", "e3nn"])
def test_layer_output_on_the_inner_rows_only(model, quartz, convolution):
    """A block's layer computes its output on the rows the next layer reads (``n_out``):
    those rows equal the full output's, in both convolution paths."""
    from atomshard.models.base import identity_exchange

    block = block_graph(quartz, plan_blocks(quartz, 3, n_blocks=4) == 1, 3)
    rows, edges = block.shells.rows, block.shells.edges
    layer = model.interaction(0)
    torch.manual_seed(3)
    x = torch.randn(block.n_atoms, layer.irreps_in.dim, dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 2, (block.n_atoms,)), 2).double()
    radial, sh = model.edge_features(quartz.edge_vectors()[block.edges])
    n_e = edges[2]
    args = (x, one_hot, sh[:n_e], radial[:n_e], block.src[:n_e], block.dst[:n_e],
            identity_exchange)  # fmt: skip
    model.set_convolution(convolution)
    try:
        with torch.no_grad():
            full = layer(*args)
            inner = layer(*args, n_out=rows[2])
    finally:
        model.set_convolution("fused")
    assert rows[2] < block.n_atoms and inner.shape == (rows[2], full.shape[1])
    assert float((inner - full[: rows[2]]).abs().max()) <= 1e-12 * float(full.abs().max())


@pytest.mark.parametrize("n_hops", [1, 2, 3])
def test_indexed_block_graph_is_the_same_block(quartz, n_hops):
    """Gathering a block's edges through the destination index (``ptr``: cost of the
    block, not of the whole edge list) gives the very same atoms, edges, order and
    shells as the scan of every edge; a graph whose edges are not sorted by destination
    gets no index."""
    ptr = dst_pointer(quartz)
    assert ptr is not None and int(ptr[-1]) == quartz.n_edges
    part = torch.as_tensor(np.random.default_rng(n_hops).integers(0, 6, quartz.n_atoms))
    for b in range(6):
        plain = block_graph(quartz, part == b, n_hops)
        fast = block_graph(quartz, part == b, n_hops, ptr=ptr)
        for name in ("atoms", "edges", "src", "dst"):
            assert torch.equal(getattr(plain, name), getattr(fast, name)), name
        assert plain.shells == fast.shells
    order = torch.randperm(quartz.n_edges, generator=torch.Generator().manual_seed(0))
    shuffled = AtomicGraph(
        positions=quartz.positions, species=quartz.species, cell=quartz.cell, pbc=quartz.pbc,
        src=quartz.src[order], dst=quartz.dst[order], shifts=quartz.shifts[order],
        cutoff=quartz.cutoff,
    )  # fmt: skip
    assert dst_pointer(shuffled) is None


def test_block_graph_shells_cover_the_receptive_field(quartz):
    part = plan_blocks(quartz, 3, n_blocks=5)
    for b in range(5):
        block = block_graph(quartz, part == b, 3)
        rows, edges = block.shells.rows, block.shells.edges
        assert rows[0] == int((part == b).sum()) and rows[-1] == block.n_atoms
        assert bool((block.atoms[: rows[0]] == torch.nonzero(part == b).squeeze(1)).all())
        assert bool((block.dst[1:] >= block.dst[:-1]).all())  # sorted by destination
        for k in range(3):
            into = quartz.dst[:, None] == block.atoms[None, : rows[k]]
            assert edges[k] == int(into.any(1).sum())  # every edge into the inner atoms
            assert int(block.src[: edges[k]].max()) < rows[k + 1]  # ... from the next shell
        src, dst = quartz.src[block.edges], quartz.dst[block.edges]
        assert bool((block.atoms[block.src] == src).all())
        assert bool((block.atoms[block.dst] == dst).all())


def test_cluster_and_a_strictly_local_model():
    """A non-periodic cluster (no stress) and a one-hop pair potential split exactly."""
    torch.manual_seed(1)
    cfg = preset("si-config", species=(1, 6, 8), channels=4, n_layers=2, dtype="float64")
    nequip = NequIPPotential.from_config(cfg).eval()
    atoms = molecule("C60")
    atoms.numbers[::7] = 8
    atoms.rattle(0.05, seed=2)
    g = AtomicGraph.from_ase(atoms, nequip.cutoff)
    want = compute_properties(nequip, g, forces=True, stress=False)
    got = compute_properties_in_blocks(nequip, g, n_blocks=6, stress=False)
    _same(got, want)
    assert got.stress is None
    lj = LennardJones(epsilon=0.0104, sigma=3.40, cutoff=7.0).double()
    argon = read_structures("quartz", repeat=(2, 2, 2))[0]
    argon.numbers[:] = 18
    ga = AtomicGraph.from_ase(argon, lj.cutoff)
    _same(compute_properties_in_blocks(lj, ga, n_blocks=4), compute_properties(lj, ga))


def test_max_atoms_bounds_every_block_graph(one, quartz):
    """As few blocks as keep each block graph within max_atoms."""
    whole = compute_properties(one, quartz, forces=True, stress=True)
    part = plan_blocks(quartz, 1, max_atoms=250)
    assert int(part.max()) >= 1
    sizes = [block_graph(quartz, part == b, 1).n_atoms for b in part.unique()]
    assert max(sizes) <= 250
    out, used = evaluate(one, quartz, max_atoms=250)
    assert used is not None and bool((used == part).all())
    _same(out, whole)
    out, used = evaluate(one, quartz, max_atoms=10_000)  # fits: one evaluation
    assert used is None
    _same(out, whole, rtol=0.0)
    with pytest.raises(InputError, match=r"no split of 432 atoms into blocks of at most 20 atoms"):
        plan_blocks(quartz, 1, max_atoms=20)


@pytest.mark.parametrize("bad", ["many", 0, -3, 2.5, True])
def test_bad_block_atoms_are_named(model, bad):
    with pytest.raises(InputError, match="block atoms must be"):
        resolve_max_atoms(model, bad)


def test_auto_block_atoms_from_the_memory(model):
    per_atom = 4.0 * model.activation_bytes(1) + 512 * 20
    assert auto_max_atoms(model, edges_per_atom=20, available=10 << 30) == int(
        0.5 * (10 << 30) / per_atom
    )
    assert resolve_max_atoms(model, " AUTO ") is not None  # this machine has /proc/meminfo
    assert resolve_max_atoms(model, "1200") == 1200
    assert auto_max_atoms(LennardJones(), available=1 << 30) is None  # no estimate: no blocks


def test_auto_blocks_stay_below_the_layer_checkpoints(one, quartz, monkeypatch):
    """Once a system must be split, "auto" keeps every block graph small enough that its
    layers run without checkpoints (measured faster than fewer checkpointed blocks); a
    system that fits is still evaluated whole, and a model with checkpoints set outright
    is not capped."""
    import atomshard.models.potential.model as nequip_model
    import atomshard.runtime.blocks as blocks

    monkeypatch.setattr(nequip_model, "AUTO_CHECKPOINT_BYTES", 250 * one.activation_bytes(1))
    assert one.checkpoint_free_atoms() == 250
    whole = compute_properties(one, quartz, forces=True, stress=True)

    monkeypatch.setattr(blocks, "auto_max_atoms", lambda *a, **k: 400)  # memory: 400 atoms
    assert resolve_max_atoms(one, "auto", quartz) == 250
    assert resolve_max_atoms(one, "auto") == 400  # no graph: no system to compare with
    out, used = evaluate(one, quartz, max_atoms="auto")
    assert used is not None
    sizes = [block_graph(quartz, used == b, 1).n_atoms for b in used.unique()]
    assert max(sizes) <= 250
    _same(out, whole)

    monkeypatch.setattr(blocks, "auto_max_atoms", lambda *a, **k: 10_000)  # fits whole
    assert resolve_max_atoms(one, "auto", quartz) == 10_000
    assert evaluate(one, quartz, max_atoms="auto")[1] is None

    monkeypatch.setattr(blocks, "auto_max_atoms", lambda *a, **k: 400)
    monkeypatch.setattr(one, "checkpoint", True)
    assert one.checkpoint_free_atoms() is None
    assert resolve_max_atoms(one, "auto", quartz) == 400


def test_calculator_and_md_config_take_block_atoms(model, one, quartz):
    from atomshard.md import SerialForceField, state_from_ase
    from atomshard.md.calculator import AtomshardCalculator

    atoms = read_structures("quartz", repeat=(4, 4, 3))[0]
    atoms.rattle(0.05, seed=1)
    whole = compute_properties(one, quartz, forces=True, stress=True)
    atoms.calc = AtomshardCalculator(one, block_atoms=250)
    np.testing.assert_allclose(atoms.get_forces(), whole.forces.numpy(), rtol=0, atol=1e-12)
    assert atoms.calc._blocks is not None  # it did split
    ff = SerialForceField(one, skin=1.0, block_atoms=250)
    state = state_from_ase(atoms)
    ff(state)
    assert ff._blocks is not None
    part = ff._blocks[2]
    np.testing.assert_allclose(state.forces.numpy(), whole.forces.numpy(), rtol=0, atol=1e-12)
    state.positions[0] += 0.01  # within the skin: same neighbour list, same blocks
    ff(state)
    assert ff._blocks[2] is part
    with pytest.raises(InputError, match="block atoms must be"):
        AtomshardCalculator(model, block_atoms="lots")
    assert MDConfig(block_atoms=5000).block_atoms == 5000
    for bad in ("lots", 0, 2.5):
        with pytest.raises(InputError, match="block_atoms"):
            MDConfig(block_atoms=bad)  # type: ignore[arg-type]
