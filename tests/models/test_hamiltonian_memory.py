"""Memory-bounded Hamiltonian model: edge chunks and activation checkpointing change nothing.

A 12-atom amorphous HfO2 cell (Hf 10, O 4 orbitals, l_max 4) at 4.5 Å has 372 edges; a
chunk of 37 edges exercises 11 chunks (the last one partial), so the online per-node
softmax rescales its sums many times.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.io.amorphous import amorphous_hfo2
from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel
from atomshard.models.hamiltonian.chunked import chunk_bounds
from atomshard.train.hamiltonian import TrainingConfig

SZV = {"Hf": "2s1p1d", "O": "1s1p"}


def _model(dtype: str = "float64") -> HamiltonianModel:
    torch.manual_seed(0)
    cfg = HamiltonianConfig(
        basis=SZV, cutoff=4.5, channels=4, hidden=6, n_layers=2, n_rbf=8, dtype=dtype
    )
    return HamiltonianModel(cfg)


def _run(
    model: HamiltonianModel, graph: AtomicGraph, chunk: int, checkpoint: bool
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """All predicted blocks and the parameter gradients of a quadratic loss on them."""
    model.set_memory(edge_chunk=chunk, checkpoint=checkpoint)
    model.zero_grad(set_to_none=True)
    pred = model(graph)
    blocks = [b for _, b in pred.node.values()] + [b for _, b in pred.edge.values()]
    loss = sum((torch.sin(b) * b).sum() for b in blocks)
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [b.detach() for b in blocks], grads


def _compare(a: tuple, b: tuple) -> tuple[float, float]:  # type: ignore[type-arg]
    out = max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a[0], b[0], strict=True))
    assert set(a[1]) == set(b[1])
    # relative to the largest gradient: some entries (the attention's last bias, to which
    # the softmax is invariant) are zero up to round-off in both runs
    scale = max(float(g.abs().max()) for g in b[1].values())
    grad = max(float((a[1][k] - b[1][k]).abs().max()) for k in b[1]) / scale
    return out, grad


@pytest.fixture(scope="module")
def hfo2_graph() -> AtomicGraph:
    graph = AtomicGraph.from_ase(amorphous_hfo2(4, seed=1), 4.5)
    assert graph.n_edges > 10 * 37
    return graph


@pytest.fixture(scope="module")
def plain(hfo2_graph: AtomicGraph) -> tuple:  # type: ignore[type-arg]
    return _run(_model(), hfo2_graph, 0, False)


def test_chunk_bounds() -> None:
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(10, 0) == [(0, 10)]
    assert chunk_bounds(3, 100) == [(0, 3)]
    assert chunk_bounds(0, 5) == []


@pytest.mark.parametrize(
    ("chunk", "checkpoint"),
    [(37, False), (37, True), (0, True)],
    ids=["chunked", "chunked+checkpoint", "layer-checkpoint"],
)
def test_same_outputs_and_gradients(
    hfo2_graph: AtomicGraph,
    plain: tuple,  # type: ignore[type-arg]
    chunk: int,
    checkpoint: bool,
) -> None:
    """float64: chunked / checkpointed == plain to 1e-12 (outputs and parameter gradients)."""
    out, grad = _compare(_run(_model(), hfo2_graph, chunk, checkpoint), plain)
    assert out <= 1e-12 and grad <= 1e-12
    assert max(float(b.abs().max()) for b in plain[0]) > 1e-3  # not trivially zero


def test_isolated_atom_and_no_grad() -> None:
    """An atom without incoming edges keeps its embedding (no 0/0 in the online softmax)."""
    atoms = Atoms(
        "HfO2O",
        positions=[[0, 0, 0], [1.9, 0, 0], [0, 1.9, 0], [20, 20, 20]],
    )
    model = _model()
    graph = AtomicGraph.from_ase(atoms, 4.5)
    with torch.no_grad():
        model.set_memory()
        ref = model(graph)
        model.set_memory(edge_chunk=2, checkpoint=True)
        out = model(graph)
    for key, (idx, b) in ref.node.items():
        assert torch.equal(out.node[key][0], idx)
        assert torch.allclose(out.node[key][1], b, atol=1e-12, rtol=0)
        assert torch.isfinite(out.node[key][1]).all()


def test_bfloat16_chunked_close_to_plain(hfo2_graph: AtomicGraph) -> None:
    model = _model("bfloat16")
    with torch.no_grad():
        ref = model(hfo2_graph)
        model.set_memory(edge_chunk=37)
        out = model(hfo2_graph)
    for key, (_, b) in ref.edge.items():
        err = float((out.edge[key][1] - b).abs().max() / b.abs().max())
        assert err < 5e-2


def test_bad_settings() -> None:
    with pytest.raises(InputError, match="edge_chunk"):
        _model().set_memory(edge_chunk=-1)
    with pytest.raises(InputError, match=r"training\.edge_chunk"):
        TrainingConfig(edge_chunk=-5)
    cfg = TrainingConfig(edge_chunk=1000, activation_checkpoint=True)
    assert cfg.edge_chunk == 1000 and cfg.activation_checkpoint
    assert np.isfinite(cfg.lr)
