"""The fused ``uvu`` convolution reproduces the e3nn ``TensorProduct`` path.

Float64: energies, forces and stress to <= 1e-10 relative (measured ~1e-12); float32: to
round-off. Chunking (several chunks), recompute (checkpointed chunks) and the double
backward of training (force loss) give the same numbers.
"""

from __future__ import annotations

import pytest
import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models import compute_properties
from atomshard.models.potential import NequIPPotential, preset
from atomshard.testing import grad_fn_names, random_structure

SPECIES = (8, 14)


@pytest.fixture(autouse=True, params=["edges", "nodes"])
def layout(request, monkeypatch):
    """Every test here runs with both layouts of the fused chunks (models built inside a
    test start with it): one row per edge, and the padded ``[nodes, in-degree]`` slots
    (which ``"auto"`` would not always pick for these small random cells)."""
    from atomshard.models.potential import conv

    monkeypatch.setattr(conv._settings, "DEFAULT_LAYOUT", request.param)
    return request.param


def _model(dtype: str, **changes) -> NequIPPotential:
    torch.manual_seed(0)
    base = dict(channels=6, n_layers=3, avg_num_neighbors=20.0, dtype=dtype)
    base.update(changes)
    return NequIPPotential.from_config(preset("si-config", species=SPECIES, **base)).eval()


def _graph(model: NequIPPotential, n_atoms: int = 8, seed: int = 4) -> AtomicGraph:
    atoms = random_structure(SPECIES, n_atoms, periodic=True, seed=seed)
    return AtomicGraph.from_ase(atoms, model.cutoff)


def _props(model, graph, kind, **options):
    model.set_convolution(kind, **options)
    try:
        return compute_properties(model, graph, forces=True, stress=True)
    finally:
        model.set_convolution("fused", chunk_edges="auto", recompute="auto")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize(
    "options",
    [{}, {"chunk_edges": 37}, {"chunk_edges": 50, "recompute": True}],
    ids=["one-chunk", "chunks", "recompute"],
)
def test_float64_matches_e3nn_lmax3_parity(options):
    model = _model("float64")  # l_max 3, parity, 3 layers
    graph = _graph(model)
    assert graph.src.shape[0] > 60
    ref = _props(model, graph, "e3nn")
    got = _props(model, graph, "fused", **options)
    assert _rel(got.energies, ref.energies) <= 1e-10
    assert _rel(got.forces, ref.forces) <= 1e-10
    assert _rel(got.stress, ref.stress) <= 1e-10


def test_float32_matches_e3nn_to_roundoff():
    model = _model("float32", parity=False, self_connection="species")
    graph = _graph(model, seed=5)
    ref = _props(model, graph, "e3nn")
    got = _props(model, graph, "fused", chunk_edges=64)
    assert _rel(got.energies, ref.energies) <= 1e-5
    assert _rel(got.forces, ref.forces) <= 1e-4
    assert _rel(got.stress, ref.stress) <= 1e-4


def test_training_double_backward_matches():
    """Force-loss parameter gradients (create_graph) through fused chunks and recompute."""
    model = _model("float64", n_layers=2, l_max=2)
    graph = _graph(model, n_atoms=6, seed=6)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(kind, **options):
        model.set_convolution(kind, **options)
        p = compute_properties(model, graph, create_graph=True)
        assert p.forces is not None and p.stress is not None
        loss = p.energy**2 + (p.forces**2).sum() + (p.stress**2).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    ref = grads("e3nn")
    assert _rel(grads("fused", chunk_edges=29, recompute=True), ref) <= 1e-10
    assert _rel(grads("fused", chunk_edges=16384, recompute=False), ref) <= 1e-10


def test_sevennet0_fused_matches_e3nn(tmp_path):
    pytest.importorskip("sevenn", reason="sevenn (atomshard[sevennet]) is not installed")
    from atomshard.models.checkpoint import load_model
    from atomshard.models.potential.sevennet import (
        convert_sevennet_checkpoint,
        find_sevennet_checkpoint,
    )
    from atomshard.testing.sevennet_reference import parity_structures

    target = convert_sevennet_checkpoint(find_sevennet_checkpoint("SevenNet-0"), tmp_path / "s0.pt")
    model = load_model(target, dtype=torch.float64)
    assert isinstance(model, NequIPPotential)
    structures = parity_structures()
    atoms = structures[sorted(structures)[0]]
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    ref = _props(model, graph, "e3nn")
    got = _props(model, graph, "fused", chunk_edges=300)
    assert _rel(got.energies, ref.energies) <= 1e-10
    assert _rel(got.forces, ref.forces) <= 1e-10
    if ref.stress is not None:
        assert got.stress is not None and _rel(got.stress, ref.stress) <= 1e-10


def test_state_dict_unchanged_and_errors():
    model = _model("float64", n_layers=2)
    keys = set(model.state_dict())
    assert not any(".fused." in k for k in keys)  # the fused path adds no checkpoint keys
    assert any(k.endswith(".tp.weight") for k in keys)
    with pytest.raises(InputError, match="unknown convolution 'cuda'"):
        model.set_convolution("cuda")
    with pytest.raises(InputError, match="chunk_edges=0"):
        model.set_convolution("fused", chunk_edges=0)
    with pytest.raises(InputError, match="chunk_edges='big'"):
        model.set_convolution("fused", chunk_edges="big")
    assert model.interaction(0).chunk_edges == "auto"
    with pytest.raises(InputError, match="recompute='always'"):
        model.set_convolution("fused", recompute="always")
    assert model.interaction(0).recompute == "auto"
    assert model.interaction(0).convolution == "fused"


def test_rank_without_atoms_keeps_the_output_width():
    """A graph-parallel rank may own no atoms: zero nodes, zero edges."""
    model = _model("float64", n_layers=2)
    layer = model.interaction(0)
    f64 = torch.float64
    empty = torch.zeros(0, dtype=torch.int64)
    x = torch.zeros(0, layer.irreps_in.dim, dtype=f64, requires_grad=True)
    sh = torch.zeros(0, 16, dtype=f64, requires_grad=True)
    calls = []

    def exchange(h):
        calls.append(h)
        return h

    out = layer(
        x,
        torch.zeros(0, len(SPECIES), dtype=f64),
        sh,
        torch.zeros(0, model.config.n_radial, dtype=f64),
        empty,
        empty,
        exchange,
    )
    assert out.shape == (0, layer.irreps_out.dim)
    # the output stays connected to the exchanged features and to the edge features (as the
    # e3nn path is): in the graph-parallel runtime the force backward must reach the
    # exchange, a collective every rank joins
    grads = torch.autograd.grad(out.sum(), [calls[0], sh], allow_unused=True)
    assert all(g is not None for g in grads)


@pytest.mark.parametrize("chunk", [10**6, 20])
def test_atoms_without_neighbours(chunk):
    """Atoms with no edge into them (three far from the others: rows of padding only in
    the node layout) get the e3nn path's numbers; a chunk without edges has zero-wide
    slots and zero sums."""
    from ase import Atoms

    model = _model("float64", n_layers=2)
    atoms = random_structure(SPECIES, 6, periodic=False, seed=3)
    lone = Atoms("OSiO", positions=[[40.0, 0, 0], [0, 40.0, 0], [0, 0, 40.0]])
    graph = AtomicGraph.from_ase(atoms + lone, model.cutoff)
    in_degree = torch.bincount(graph.dst, minlength=graph.n_atoms)
    assert (in_degree[-3:] == 0).all() and (in_degree[:-3] > 0).any()
    ref = _props(model, graph, "e3nn")
    got = _props(model, graph, "fused", chunk_edges=chunk)
    assert _rel(got.energies, ref.energies) <= 1e-10
    assert _rel(got.forces, ref.forces) <= 1e-10
    assert got.forces[-3:].abs().max() == 0.0
    conv = model.interaction(1).fused
    h = torch.randn(4, conv.dim_x, dtype=torch.float64, requires_grad=True)
    none = torch.zeros(0, dtype=torch.int64)
    sh = torch.zeros(0, 16, dtype=torch.float64)
    er = torch.zeros(0, model.config.n_radial, dtype=torch.float64)
    layer_radial = model.interaction(1).radial
    for nodes in (False, True):
        sums, _ = conv._sums(layer_radial, h, sh, er, none, none, 3, nodes)
        assert sums.shape == (3, conv.group_dim) and not sums.any()


def test_irregular_structure_rows_by_in_degree(monkeypatch, layout):
    """A cluster in vacuum (surface atoms have few neighbours) pads its chunks by more than
    ``SORT_NODE_PADDING``: the call orders its rows by in-degree first (less padding; the
    node layout then fits) and puts the outputs back in atom order — e3nn's numbers."""
    from atomshard.models.potential import conv

    model = _model("float64", n_layers=2)
    atoms = random_structure(SPECIES, 14, periodic=False, seed=5)
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    seen: list[float] = []
    real = conv.FusedUVUConvolution._padding

    def spy(deg, bounds, n_edges):
        seen.append(real(deg, bounds, n_edges))
        return seen[-1]

    monkeypatch.setattr(conv.FusedUVUConvolution, "_padding", staticmethod(spy))
    ref = _props(model, graph, "e3nn")
    got = _props(model, graph, "fused", chunk_edges=40)
    assert _rel(got.energies, ref.energies) <= 1e-10
    assert _rel(got.forces, ref.forces) <= 1e-10
    if layout == "nodes":  # per layer: the padding in atom order, then in degree order
        assert len(seen) == 4 and seen[0] > conv.SORT_NODE_PADDING, seen
        assert seen[1] < 0.95 * seen[0], seen
        pos = model.interaction(0).fused.row_order(torch.sort(graph.dst).values, 14, 40)
        assert pos is not None and sorted(pos.tolist()) == list(range(14))
    else:
        assert not seen


def _layer_conv(layer, graph, h, sh, radial, **options):
    """The interaction's fused convolution over the whole graph."""
    return layer.fused(h, sh, radial, layer.radial, graph.src, graph.dst, **options)


@pytest.mark.parametrize("recompute", [False, True])
def test_chunks_share_one_node_gradient(recompute):
    """Several chunks add their node-feature gradients into one buffer (no per-chunk
    ``[n_local, width]`` gradient), with the same gradient as one chunk, and stay
    differentiable under create_graph."""
    model = _model("float64", n_layers=2)
    layer = model.interaction(1)
    graph = _graph(model, n_atoms=10, seed=7)
    radial, sh = model.edge_features(graph.edge_vectors())
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(graph.n_atoms, layer.irreps_in.dim, dtype=torch.float64, generator=gen)
    h.requires_grad_(True)

    def run(chunk: int, create_graph: bool = False):
        out = _layer_conv(layer, graph, h, sh, radial, chunk_edges=chunk, recompute=recompute)
        (g,) = torch.autograd.grad((out**2).sum(), h, create_graph=create_graph)
        return out, g

    one_out, one = run(10**6)
    many_out, many = run(23)
    # recomputed and stored chunks are _ChunkFunction nodes: they add into the sink that
    # _Source hands on
    adder = "_ChunkFunctionBackward"
    assert "_SourceBackward" not in grad_fn_names(one_out)
    assert adder in grad_fn_names(many_out) and "_SourceBackward" in grad_fn_names(many_out)
    assert _rel(many, one) <= 1e-12
    # second order (a force loss): the gradient itself is differentiated
    _, g1 = run(10**6, create_graph=True)
    _, g2 = run(23, create_graph=True)
    (h1,) = torch.autograd.grad((g1**2).sum(), h)
    (h2,) = torch.autograd.grad((g2**2).sum(), h)
    assert _rel(h2, h1) <= 1e-10


def test_auto_chunks_follow_the_layer_width():
    """``chunk_edges="auto"``: recomputed chunks hold about AUTO_CHUNK_BYTES of temporaries,
    so a wide layer gets fewer edges per chunk than a narrow one, within the bounds."""
    from atomshard.models.potential import conv

    model = NequIPPotential.from_config(preset("si-config", species=SPECIES))
    sizes = [model.interaction(t).fused.auto_chunk_edges(4) for t in range(4)]
    widths = [model.interaction(t).fused.bytes_per_edge(4) for t in range(4)]
    assert all(conv.MIN_AUTO_CHUNK_EDGES <= n <= conv.DEFAULT_CHUNK_EDGES for n in sizes)
    assert sizes[2] < sizes[0] and widths[2] > widths[0]
    assert sizes[2] == max(conv.AUTO_CHUNK_BYTES // widths[2], conv.MIN_AUTO_CHUNK_EDGES)


class _FakeHalo:
    """An exchange for one process: the last rows are copies of owned rows (``mapping``);
    ``start``/``wait`` log when they are called, so the test sees what ran in between."""

    def __init__(self, n_owned: int, mapping: torch.Tensor, log: list[str]) -> None:
        self.n_owned, self.mapping, self.log = n_owned, mapping, log

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        owned = x[: self.n_owned]
        return torch.cat([owned, owned.index_select(0, self.mapping)])

    def start(self, x: torch.Tensor):
        self.log.append("start")
        out, log = self(x), self.log

        class _Pending:
            def wait(self):
                log.append("wait")
                return out

        return _Pending()


def test_overlap_plan_orders_interior_nodes_first():
    """Interior nodes (no edge from a halo row) come first, boundary ones after; edges are
    sorted by the new destination, each node's edges keep their order."""
    from atomshard.models.potential.conv import OverlapPlan

    gen = torch.Generator().manual_seed(3)
    n_owned, n_local, n_edges = 30, 40, 300
    dst = torch.sort(torch.randint(0, n_owned, (n_edges,), generator=gen)).values
    src = torch.randint(0, n_owned, (n_edges,), generator=gen)
    halo_edges = torch.randperm(n_edges, generator=gen)[:25]
    src[halo_edges] = torch.randint(n_owned, n_local, (25,), generator=gen)
    plan = OverlapPlan(src, dst, n_owned)
    boundary = set(dst[src >= n_owned].tolist())
    assert 0 < plan.n_inner_nodes == n_owned - len(boundary) < n_owned
    assert sorted(plan.order.tolist()) == list(range(n_edges))
    assert bool((plan.dst[1:] >= plan.dst[:-1]).all())
    inner = plan.dst < plan.n_inner_nodes
    assert int(inner.sum()) == plan.n_inner_edges and bool(inner[: plan.n_inner_edges].all())
    assert bool((plan.src[: plan.n_inner_edges] < n_owned).all())
    old_dst = dst.index_select(0, plan.order)
    assert torch.equal(plan.pos.index_select(0, old_dst), plan.dst)  # pos: atom -> new row
    for node in range(n_owned):  # stable: a node's edges in their original order
        idx = plan.order[old_dst == node]
        assert bool((idx[1:] > idx[:-1]).all())
    assert {int(d) for d in old_dst[plan.n_inner_edges :]} == boundary


@pytest.mark.parametrize(
    "options",
    [{}, {"chunk_edges": 29}, {"chunk_edges": 40, "recompute": True}],
    ids=["one-chunk", "chunks", "recompute"],
)
def test_overlapped_layers_match_blocking_exchange(options):
    """With an exchange that can be started, every layer computes its interior nodes
    between ``start`` and ``wait`` and its boundary nodes after; energies, forces and
    stress equal those with the blocking exchange (float64, 1e-12)."""
    model = _model("float64")
    g = _graph(model, n_atoms=14, seed=7)
    n_owned = 10
    # the last 4 atoms play halo rows: no edge points into them; atoms 0-4 read no halo
    # row (a small random cell has no atom that far from the others: drop those edges)
    keep = (g.dst < n_owned) & ((g.src < n_owned) | (g.dst >= 5))
    graph = AtomicGraph(
        positions=g.positions,
        species=g.species,
        cell=g.cell,
        pbc=g.pbc,
        src=g.src[keep],
        dst=g.dst[keep],
        shifts=g.shifts[keep],
        cutoff=g.cutoff,
    )
    log: list[str] = []
    ex = _FakeHalo(n_owned, torch.tensor([3, 1, 4, 1]), log)

    def logged(post):
        def run(agg):
            log.append("chunk")
            return post(agg)

        return run

    for layer in model.layers:  # each chunk's post map (linear_2) logs
        layer._linear_2 = logged(layer._linear_2)
    results = {}
    try:
        for overlap in (False, True):
            model.set_convolution(overlap=overlap, **options)
            log.clear()
            results[overlap] = compute_properties(
                model, graph, forces=True, stress=True, exchange=ex, n_owned=n_owned
            )
            runs = "".join(e[0] for e in log).split("s")[1:]  # per layer, after its start
            if overlap:
                assert len(runs) == len(model.layers)
                assert all(r.startswith("c") and r.count("w") == 1 for r in runs), log
                assert all(r.endswith("c") for r in runs), log  # boundary nodes after wait
            else:
                assert "start" not in log
    finally:
        model.set_convolution(overlap=True, chunk_edges="auto", recompute="auto")
        for layer in model.layers:
            del layer._linear_2
    plan = model.overlap_plan(graph, ex)  # True, the default
    assert model.set_convolution(overlap="auto").overlap_plan(graph, ex) is None  # CPU: off
    assert model.set_convolution(overlap=False).overlap_plan(graph, ex) is None
    model.set_convolution(overlap=True)
    assert plan is not None and 0 < plan.n_inner_nodes < n_owned, "the test would be void"
    a, b = results[True], results[False]
    assert _rel(a.energies, b.energies) <= 1e-12
    assert _rel(a.forces, b.forces) <= 1e-12
    assert _rel(a.stress, b.stress) <= 1e-12


def test_overlap_setting_is_checked():
    """``overlap`` takes True, False or "auto"; anything else is an input error."""
    model = _model("float64")
    with pytest.raises(InputError, match="overlap='yes'"):
        model.set_convolution(overlap="yes")
    assert model.overlap is True


def _layer_inputs(model: NequIPPotential, t: int, n_atoms: int = 10, seed: int = 7):
    layer = model.interaction(t)
    graph = _graph(model, n_atoms=n_atoms, seed=seed)
    vectors = graph.edge_vectors().detach().requires_grad_(True)
    radial, sh = model.edge_features(vectors)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(graph.n_atoms, layer.irreps_in.dim, dtype=torch.float64, generator=gen)
    return layer, graph, vectors, radial, sh, h.requires_grad_(True)


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("chunk", [10**6, 23])
def test_hand_written_chunk_backward_matches_autograd(chunk, recompute):
    """The chunks' hand-written backward (_ChunkFunction: no second forward of the tensor
    product) — recomputed, and stored (radial weights kept, the last matrix's backward by
    hand) — gives
    autograd's gradients (a checkpointed chunk, a stored one) for the node features, the
    edge vectors (through Y and the radial basis) and the radial MLP's weights, and the
    same second derivatives (force loss). The middle layer of an l_max = 3 model has both
    kinds of path runs (scalar inputs; l > 0 inputs, several paths to one output
    dimension)."""
    model = _model("float64", n_layers=3)
    layer, graph, vectors, radial, sh, h = _layer_inputs(model, 1)
    kinds = {(grp.d1 == 1, cls.n_paths > 1) for grp in layer.fused._groups for cls in grp.classes}
    assert kinds >= {(True, False), (False, True)}, "the test would miss a branch"
    wanted = [h, vectors, *layer.radial.weights]
    gen = torch.Generator().manual_seed(2)
    results = {}
    for mode in ("autograd", "manual"):
        layer.fused.chunk_backward = mode
        radial, sh = model.edge_features(vectors)
        try:
            out = _layer_conv(layer, graph, h, sh, radial, chunk_edges=chunk, recompute=recompute)
            weight = torch.randn(out.shape, dtype=out.dtype, generator=gen.manual_seed(3))
            # first order: the fast backward (no create_graph)
            first = torch.autograd.grad((out * weight).sum(), wanted, retain_graph=True)
            # second order: the differentiable rebuild
            again = torch.autograd.grad((out * weight).sum(), wanted, create_graph=True)
            second = torch.autograd.grad(sum((g**2).sum() for g in again), wanted)
        finally:
            layer.fused.chunk_backward = "manual"
        results[mode] = (out.detach(), first, second)
    (out_c, first_c, second_c), (out_m, first_m, second_m) = (
        results["autograd"],
        results["manual"],
    )
    assert _rel(out_m, out_c) == 0.0
    for a, b in zip(first_m, first_c):
        assert _rel(a, b) <= 1e-12
    for a, b in zip(second_m, second_c):
        assert _rel(a, b) <= 1e-10


@pytest.mark.parametrize("recompute", [True, False])
def test_hand_written_chunk_backward_gradcheck(recompute):
    """Finite differences agree with the hand-written backward, recomputed and stored
    (node features and edge features of a few edges, several chunks, float64)."""
    model = _model("float64", n_layers=3, channels=2)
    layer, graph, _, radial, sh, h = _layer_inputs(model, 1, n_atoms=4, seed=3)
    keep = torch.arange(min(8, graph.src.shape[0]))
    src, dst = graph.src[keep], graph.dst[keep]
    order = torch.argsort(dst, stable=True)
    src, dst = src[order], dst[order]
    sh0 = sh.detach()[keep][order].requires_grad_(True)
    radial0 = radial.detach()[keep][order].requires_grad_(True)
    h0 = h.detach().requires_grad_(True)

    def f(sh_, radial_, h_):
        return layer.fused(
            h_, sh_, radial_, layer.radial, src, dst, chunk_edges=3, recompute=recompute
        )

    assert torch.autograd.gradcheck(f, (sh0, radial0, h0), eps=1e-6, atol=1e-7)


def test_force_pass_skips_parameter_gradients(monkeypatch):
    """A force evaluation (autograd.grad of the energy for the positions) does not compute
    the radial MLP's weight gradients in the hand-written backward; a training backward
    (``loss.backward()``) does."""
    from atomshard.models.potential import conv

    seen: list[list[bool]] = []
    real = conv._engine_needs

    def spy(tensors):
        needs = real(tensors)
        seen.append(needs)
        return needs

    monkeypatch.setattr(conv._autograd, "_engine_needs", spy)
    model = _model("float64", n_layers=2)
    model.set_convolution(recompute=True)
    graph = _graph(model)
    try:
        compute_properties(model, graph, forces=True)
        assert seen and not any(any(needs) for needs in seen)
        seen.clear()
        # energy only, kept in the graph: a training step's backward
        compute_properties(
            model, graph, forces=False, stress=False, create_graph=True
        ).energy.backward()
        assert seen and all(all(needs) for needs in seen)
    finally:
        model.set_convolution(recompute="auto")


def _saved_bytes(run) -> int:
    """Bytes autograd keeps for the backward pass while ``run()`` builds its graph."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total[0]


def test_stored_chunks_keep_only_their_inputs(layout):
    """A stored chunk's hand-written backward keeps for the backward pass only the chunk's
    inputs (node rows, Y, the radial basis, indices) and its radial weights (per edge, or
    per slot in the node layout) — not the product's per-edge temporaries that autograd
    keeps (gathered rows, M_k or z, the outputs before the weights) nor the radial MLP's
    activations, counted with saved-tensor hooks; a recomputed chunk keeps the inputs
    only."""
    model = _model("float32", n_layers=3)
    layer, graph, _, radial, sh, h = _layer_inputs(model, 1)
    h, sh, radial = h.float().detach().requires_grad_(), sh.float(), radial.float()
    conv, src, dst = layer.fused, graph.src, graph.dst
    saved = {}
    assert conv.layout == layout
    for mode, recompute in (("autograd", False), ("manual", False), ("manual", True)):
        conv.chunk_backward = mode
        try:
            saved[mode, recompute] = _saved_bytes(
                lambda r=recompute: conv(h, sh, radial, layer.radial, src, dst, recompute=r)
            )
        finally:
            conv.chunk_backward = "manual"
    mlp = _saved_bytes(lambda: conv.radial_weights(layer.radial, radial))
    assert mlp > 0
    n_edges = src.shape[0]
    # float32 rows, Y and radial basis; int64 src, dst and the output's column permutation
    inputs = 4 * (h.numel() + n_edges * (sh.shape[1] + radial.shape[1])) + 16 * n_edges
    inputs += 8 * conv.perm.numel()
    slots = n_edges
    if layout == "nodes":  # the column order of h for the node layout; weights per slot
        inputs += 8 * conv.au_perm.numel()
        deg = torch.bincount(dst, minlength=graph.n_atoms)
        slots = graph.n_atoms * int(deg.max())
        assert slots > n_edges
        # one chunk: not reordered by in-degree (its widest row would stay as wide)
        assert conv.row_order(dst, graph.n_atoms, 16384) is None
    weights = 4 * slots * conv.weight_numel
    assert saved["manual", True] <= inputs, (saved, inputs)
    assert saved["manual", False] <= inputs + weights, (saved, inputs, weights)
    assert saved["manual", False] < 0.3 * saved["autograd", False], saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_node_sums_csr_equal_index_add(dtype):
    """The chunk's node sums: the CSR product (CPU, no autograd, float32/64) gives the same
    sums as ``index_add_`` (each node's edges in order), nodes without edges included; in
    bfloat16, which MKL's sparse product lacks, and under autograd it is ``index_add_``."""
    from atomshard.models.potential.conv import _NodeSums

    gen = torch.Generator().manual_seed(3)
    dst = torch.sort(torch.randint(0, 40, (500,), generator=gen)).values
    dst = dst[(dst != 7) & (dst != 39)]  # a node in the middle and the last without edges
    part = torch.randn(dst.shape[0], 33, generator=gen).to(dtype)
    ref = part.new_zeros((40, 33)).index_add_(0, dst, part)
    with torch.no_grad():
        sums = _NodeSums(dst, 40, dtype)
        got = sums(part)
    assert (sums.csr is not None) == (dtype != torch.bfloat16)
    assert got.shape == (40, 33) and got.dtype == dtype
    assert torch.allclose(got.float(), ref.float(), rtol=1e-6, atol=1e-6)
    assert not got[7].any() and not got[39].any()
    with torch.enable_grad():
        assert _NodeSums(dst, 40, dtype).csr is None


def test_auto_layout_limits(layout):
    """``"auto"`` takes the node layout on the CPU only while the call pads at most
    ``MAX_NODE_PADDING`` and its worst chunk at most ``MAX_CHUNK_PADDING`` (one atom with
    ten times its neighbours' degree would make its chunk's slots ~10× its edges); a
    misspelt layout is an error, not the edge layout in disguise."""
    from atomshard.models.potential import conv as conv_mod

    conv = _model("float32", n_layers=2).interaction(0).fused
    conv.layout = "auto"
    deg = torch.full((40_000,), 40)
    n_edges = int(deg.sum())
    bounds = conv._bounds(deg, n_edges, 16384)
    assert conv.use_nodes(deg, bounds, n_edges)
    deg[123] = 400  # the call still pads < 1.1, the chunk holding atom 123 ~9.8x
    n_edges = int(deg.sum())
    bounds = conv._bounds(deg, n_edges, 16384)
    assert conv._padding(deg, bounds, n_edges) < conv_mod.SORT_NODE_PADDING
    assert not conv.use_nodes(deg, bounds, n_edges)
    assert conv.use_nodes(deg[:100], [0, 100], int(deg[:100].sum()))  # no outlier there
    with pytest.raises(ValueError, match="layout='node'"):
        conv.layout = "node"
    assert conv.layout == "auto"
