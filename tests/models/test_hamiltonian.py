"""SO(2) Hamiltonian model: equivariance, hermiticity, exchange hook, checkpoints."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models.checkpoint import load_model, save_checkpoint
from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel
from atomshard.models.hamiltonian.layers import reverse_edges

BASIS = {"O": "2s1p1d", "H": "1s1p"}


def _water_cluster() -> Atoms:
    pos = np.array(
        [
            [0.0, 0.0, 0.12],
            [0.0, 0.76, -0.47],
            [0.0, -0.76, -0.47],
            [2.9, 0.1, 0.2],
            [3.3, 0.8, -0.3],
            [3.4, -0.7, 0.1],
        ]
    )
    return Atoms("OH2OH2", positions=pos)


def _model(dtype: str = "float64", **kw: object) -> HamiltonianModel:
    torch.manual_seed(0)
    settings: dict[str, object] = {"cutoff": 4.0, "channels": 4, "hidden": 6, "n_layers": 2}
    settings.update(kw)
    cfg = HamiltonianConfig(basis=BASIS, dtype=dtype, **settings)  # type: ignore[arg-type]
    return HamiltonianModel(cfg)


def _blocks(model: HamiltonianModel, atoms: Atoms) -> dict[tuple[int, ...], np.ndarray]:
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    bs = model(graph).to_blockset(graph)
    return {tuple(r): b for r, b in zip(bs.atom_pairs.tolist(), bs.blocks, strict=True)}


def test_config_validation() -> None:
    cfg = HamiltonianConfig(basis=BASIS)
    assert cfg.l_max == 4 and cfg.basis == {"H": "1s1p", "O": "2s1p1d"}
    with pytest.raises(InputError, match="l_max = 2 is too small"):
        HamiltonianConfig(basis=BASIS, l_max=2)
    with pytest.raises(InputError, match="dtype"):
        HamiltonianConfig(basis=BASIS, dtype="float16")


def test_equivariance_and_hermiticity() -> None:
    model = _model()
    atoms = _water_cluster()
    ref = _blocks(model, atoms)
    rot = o3.rand_matrix(dtype=torch.float64).numpy()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T + np.array([0.3, -1.0, 2.0])
    out = _blocks(model, rotated)
    basis = model.basis
    d = {z: basis.wigner(z, rot) for z in (1, 8)}
    assert set(out) == set(ref)
    worst = 0.0
    for key, b in ref.items():
        _, _, _, i, j = key
        zi, zj = int(atoms.numbers[i]), int(atoms.numbers[j])
        worst = max(worst, float(np.abs(out[key] - d[zi] @ b @ d[zj].T).max()))
        partner = ref[(-key[0], -key[1], -key[2], j, i)]
        assert np.array_equal(b, partner.T)  # exact
    assert worst <= 1e-10
    assert max(np.abs(b).max() for b in ref.values()) > 1e-3  # not trivially zero


def test_permutation_permutes_blocks() -> None:
    model = _model()
    atoms = _water_cluster()
    perm = np.array([4, 0, 3, 5, 2, 1])
    ref, out = _blocks(model, atoms), _blocks(model, atoms[perm])
    assert len(ref) == len(out)
    for (rx, ry, rz, i, j), b in out.items():
        assert np.allclose(b, ref[(rx, ry, rz, int(perm[i]), int(perm[j]))], atol=1e-12)


def test_periodic_images_and_exchange_hook() -> None:
    model = _model(n_layers=3)
    atoms = Atoms(
        "OH2",
        positions=[[0, 0, 0.1], [0, 0.76, -0.47], [0, -0.76, -0.47]],
        cell=np.diag([3.0, 3.2, 3.4]),
        pbc=True,
    )
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    calls: list[int] = []

    def exchange(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x

    pred = model(graph, exchange)
    assert calls == [3, 3, 3]
    bs = pred.to_blockset(graph)
    assert bs.n_blocks == 3 + graph.n_edges and bs.max_hermiticity_error() == 0.0


def test_float32_close_to_float64_and_bfloat16_runs() -> None:
    atoms = _water_cluster()
    b64 = _blocks(_model("float64"), atoms)
    m32 = _model("float32")
    b32 = _blocks(m32, atoms)
    scale = max(np.abs(b).max() for b in b64.values())
    assert max(np.abs(b32[k] - b64[k]).max() for k in b64) <= 1e-4 * scale
    bbf = _blocks(_model("bfloat16"), atoms)
    assert max(np.abs(bbf[k] - b64[k]).max() for k in b64) <= 5e-2 * scale


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _model()
    head = model.node_heads["8_8"]
    head.shift[0] = -20.0  # statistics travel with the weights
    save_checkpoint(tmp_path / "h.pt", model, model_type="hamiltonian", config=model.config)
    loaded = load_model(tmp_path / "h.pt")
    assert isinstance(loaded, HamiltonianModel)
    atoms = _water_cluster()
    a, b = _blocks(model, atoms), _blocks(loaded, atoms)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    from atomshard.commands.info import describe

    assert sorted(describe(tmp_path / "h.pt")["species"]) == ["H", "O"]


def test_bad_input() -> None:
    model = _model()
    with pytest.raises(InputError, match="atom 1 is C"):
        model(AtomicGraph.from_ase(Atoms("OC", positions=[[0, 0, 0], [1.2, 0, 0]]), 4.0))
    src = torch.tensor([0, 1, 1])
    dst = torch.tensor([1, 0, 2])
    with pytest.raises(InputError, match="not symmetric"):
        reverse_edges(src, dst, torch.zeros(3, 3, dtype=torch.int64))


def _periodic_water(cell: list[float], shift: float) -> Atoms:
    return Atoms(
        "OH2",
        positions=[[0, 0, 0.1 + shift], [0, 0.76, -0.47], [0.1, -0.76, -0.47 + shift]],
        cell=np.diag(cell),
        pbc=True,
    )


def test_batch_of_graphs_equals_its_parts() -> None:
    """Two periodic cells of different shape in one step: blocks, loss and gradients
    equal those of the structures one by one (element-weighted)."""
    from atomshard.models.hamiltonian.data import Sample, collate_samples
    from atomshard.train.hamiltonian import TrainingConfig, block_loss

    model, target_model = _model(), _model(n_layers=1)
    structures = [
        _periodic_water([3.0, 3.2, 3.4], 0.0),
        _periodic_water([3.6, 3.1, 3.3], 0.05),
        _water_cluster(),
    ]
    samples = []
    for k, atoms in enumerate(structures):
        graph = AtomicGraph.from_ase(atoms, model.cutoff)
        with torch.no_grad():
            t = target_model(graph)
        samples.append(Sample(f"s{k}", graph, t.node, t.edge, None, 0.0))  # type: ignore[arg-type]
    batch = collate_samples(samples)
    assert batch.graph.n_edges == sum(s.graph.n_edges for s in samples)
    cfg = TrainingConfig()
    pred = model(batch.graph)
    loss = block_loss(pred, batch, cfg)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    counts = [sum(b.numel() for _, b in [*s.node.values(), *s.edge.values()]) for s in samples]
    total = torch.zeros((), dtype=torch.float64)
    atom0 = edge0 = 0
    for s, n in zip(samples, counts, strict=True):
        part = model(s.graph)
        for kind, offset in (("node", atom0), ("edge", edge0)):
            for key, (idx, blocks) in getattr(part, kind).items():
                b_idx, b_blocks = getattr(pred, kind)[key]
                rows = torch.nonzero(torch.isin(b_idx, idx + offset)).flatten()
                assert torch.equal(b_idx[rows], idx + offset)
                assert torch.allclose(b_blocks[rows], blocks, atol=1e-12, rtol=0)
        total = total + block_loss(part, s, cfg) * n / sum(counts)
        atom0 += s.graph.n_atoms
        edge0 += s.graph.n_edges
    assert float(loss.detach()) == pytest.approx(float(total.detach()), rel=1e-12)
    total.backward()
    for name, p in model.named_parameters():
        if name in grads:
            assert torch.allclose(p.grad, grads[name], atol=1e-12, rtol=1e-9), name


def test_edge_envelope() -> None:
    """Blocks vanish at the cutoff, are untouched below cutoff - w, equivariance holds."""
    atoms = _water_cluster()
    plain, env = _model(), _model(edge_envelope=1.5)
    graph = AtomicGraph.from_ase(atoms, plain.cutoff)
    r = graph.edge_vectors().norm(dim=1)
    w = env.envelope(r)
    assert float(env.envelope(torch.tensor([4.0], dtype=torch.float64))) == 0.0
    assert torch.all(w[r < 2.5] == 1.0) and torch.all((w[r > 2.5] < 1.0) & (w[r > 2.5] > 0))
    a, b = plain(graph), env(graph)
    for key, (idx, blocks) in a.edge.items():
        assert torch.allclose(b.edge[key][1], blocks * w[idx][:, None, None], atol=1e-14)
    rot = o3.rand_matrix(dtype=torch.float64).numpy()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    ref, out = _blocks(env, atoms), _blocks(env, rotated)
    d = {z: env.basis.wigner(z, rot) for z in (1, 8)}
    for key, blk in ref.items():
        zi, zj = int(atoms.numbers[key[3]]), int(atoms.numbers[key[4]])
        assert np.abs(out[key] - d[zi] @ blk @ d[zj].T).max() <= 1e-10
    with pytest.raises(InputError, match="edge_envelope"):
        HamiltonianConfig(basis=BASIS, cutoff=4.0, edge_envelope=5.0)


def test_edge_baseline_fit_and_equivariance() -> None:
    """The two-centre baseline: least squares recovers known radial weights; with random
    weights the whole model stays equivariant and hermitian."""
    from atomshard.models.hamiltonian.heads import RadialBaseline

    model = _model(edge_baseline=6)
    key = "8_1"
    base = model.edge_baselines[key]
    assert isinstance(base, RadialBaseline) and base.weights.dtype == torch.float64
    torch.manual_seed(1)
    vec = torch.randn(200, 3, dtype=torch.float64) * 1.5
    truth = RadialBaseline(base.irreps, 6, 4.0)
    truth.weights.copy_(torch.randn_like(truth.weights))
    base.fit(vec, truth(vec), ridge=0.0)
    assert torch.allclose(base.weights, truth.weights, atol=1e-8)
    for b in model.edge_baselines.values():
        b.weights.copy_(torch.randn_like(b.weights))
    atoms = _water_cluster()
    ref = _blocks(model, atoms)
    plain = _blocks(_model(), atoms)
    assert max(np.abs(ref[k] - plain[k]).max() for k in ref if k[3] != k[4]) > 1e-3
    rot = o3.rand_matrix(dtype=torch.float64).numpy()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    out = _blocks(model, rotated)
    d = {z: model.basis.wigner(z, rot) for z in (1, 8)}
    for k, blk in ref.items():
        zi, zj = int(atoms.numbers[k[3]]), int(atoms.numbers[k[4]])
        assert np.abs(out[k] - d[zi] @ blk @ d[zj].T).max() <= 1e-10
        assert np.array_equal(blk, ref[(-k[0], -k[1], -k[2], k[4], k[3])].T)


def test_node_baseline_fit_is_exact_for_pair_sums() -> None:
    """Node targets that are exactly pair sums of a known baseline (two neighbour
    elements, all three irreps of O's block) are recovered by the fit; the model adds
    the baseline to its node blocks equivariantly."""
    from atomshard.models.hamiltonian.data import Sample
    from atomshard.train.hamiltonian import fit_output_statistics

    truth_model, model = _model(node_baseline=5), _model(node_baseline=5)
    torch.manual_seed(3)
    for b in truth_model.node_baselines.values():
        b.weights.copy_(torch.randn_like(b.weights))
    samples = []
    for k in range(6):
        atoms = _water_cluster()
        atoms.positions += np.random.default_rng(k).normal(scale=0.15, size=(6, 3))
        graph = AtomicGraph.from_ase(atoms, model.cutoff)
        base = truth_model.node_baseline_values(graph)
        node = {}
        for z in (1, 8):
            idx = torch.nonzero(graph.species == z).flatten()
            head = truth_model.node_heads[f"{z}_{z}"]
            coupled = base[z].index_select(0, idx).clone()
            coupled[:, : len(head.scalar_positions())] += 0.3  # a constant on L = 0 only
            node[(z, z)] = (idx, head.blocks(coupled))
        samples.append(Sample(f"s{k}", graph, node, {}, None, 0.0))  # type: ignore[arg-type]
    fit_output_statistics(model, samples)
    # the weights of Gaussians no neighbour reaches are undetermined; the values are
    # exact (on L = 0 up to the constant the head's shift takes: baseline + shift = truth)
    for s in samples:
        got, want = model.node_baseline_values(s.graph), truth_model.node_baseline_values(s.graph)
        for z in (1, 8):
            idx = torch.nonzero(s.graph.species == z).flatten()
            head = model.node_heads[f"{z}_{z}"]
            n0 = len(head.scalar_positions())
            fitted = got[z][idx] + head.shift
            wanted = want[z][idx].clone()
            wanted[:, :n0] += 0.3
            assert torch.allclose(fitted, wanted, atol=1e-3), z  # ridge, conditioning
    atoms = _water_cluster()
    ref = _blocks(model, atoms)
    rot = o3.rand_matrix(dtype=torch.float64).numpy()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    out = _blocks(model, rotated)
    d = {z: model.basis.wigner(z, rot) for z in (1, 8)}
    for k, blk in ref.items():
        zi, zj = int(atoms.numbers[k[3]]), int(atoms.numbers[k[4]])
        assert np.abs(out[k] - d[zi] @ blk @ d[zj].T).max() <= 1e-10


def test_distributed_training_refuses_unfitted_baselines() -> None:
    from atomshard.train.hamiltonian import TrainingConfig
    from atomshard.train.hamiltonian_distributed import train_distributed

    with pytest.raises(InputError, match="fitted by the serial trainer only"):
        train_distributed(None, _model(node_baseline=4), None, TrainingConfig())  # type: ignore[arg-type]


def test_node_weight_in_the_loss() -> None:
    from atomshard.models.hamiltonian.data import Sample
    from atomshard.train.hamiltonian import TrainingConfig, block_loss
    from atomshard.train.hamiltonian_distributed import train_distributed

    model, target_model = _model(), _model(n_layers=1)
    graph = AtomicGraph.from_ase(_water_cluster(), model.cutoff)
    with torch.no_grad():
        t, p = target_model(graph), model(graph)
    sample = Sample("w", graph, t.node, t.edge, None, 0.0)  # type: ignore[arg-type]
    sums = {"node": [0.0, 0.0, 0], "edge": [0.0, 0.0, 0]}
    for kind in sums:
        for key, (_, want) in getattr(t, kind).items():
            d = getattr(p, kind)[key][1] - want
            sums[kind][0] += float(d.abs().sum())
            sums[kind][1] += float(d.pow(2).sum())
            sums[kind][2] += d.numel()
    n = sums["node"][2] + sums["edge"][2]
    for w in (0.0, 1.0, 7.5):
        want = (w * (sums["node"][0] + sums["node"][1]) + sums["edge"][0] + sums["edge"][1]) / n
        got = float(block_loss(p, sample, TrainingConfig(node_weight=w)))
        assert got == pytest.approx(want, rel=1e-12)
    with pytest.raises(InputError, match="node_weight"):
        TrainingConfig(node_weight=-1.0)
    with pytest.raises(InputError, match=r"node_weight = 2\.0 is not supported"):
        train_distributed(None, model, None, TrainingConfig(node_weight=2.0))  # type: ignore[arg-type]


def test_cosine_learning_rate_schedule(tmp_path: Path) -> None:
    """``lr_schedule: cosine``: every epoch's learning rate is the half cosine from ``lr``
    to ``min_lr`` over the stage, whatever the validation score does; plateau stays the
    default; a bad name is one clear error."""
    from atomshard.models.hamiltonian.data import Sample
    from atomshard.train.config import cosine_lr
    from atomshard.train.hamiltonian import TrainingConfig, train

    assert cosine_lr(1.0, 0.0, 0, 4) == 1.0
    assert cosine_lr(1.0, 0.1, 2, 4) == pytest.approx(0.55, rel=1e-15)
    assert cosine_lr(1.0, 0.1, 4, 4) == pytest.approx(0.1, rel=1e-15)
    assert cosine_lr(1.0, 0.1, 9, 4) == pytest.approx(0.1, rel=1e-15)  # held at the end
    assert TrainingConfig().lr_schedule == "plateau"
    with pytest.raises(InputError, match=r"lr_schedule has an invalid value 'step' \(one of"):
        TrainingConfig(lr_schedule="step")

    model, target_model = _model(), _model(n_layers=1)
    graph = AtomicGraph.from_ase(_water_cluster(), model.cutoff)
    with torch.no_grad():
        t = target_model(graph)
    sample = Sample("w", graph, t.node, t.edge, None, 0.0)  # type: ignore[arg-type]
    tcfg = TrainingConfig(epochs=5, lr=4e-3, min_lr=1e-4, lr_schedule="cosine", ema_decay=0.0)
    result = train(model.config, [sample], [], tcfg, tmp_path, resume=False)
    got = [row["lr"] for row in result.history]
    want = [cosine_lr(4e-3, 1e-4, e, 5) for e in range(5)]
    assert got == pytest.approx(want, rel=1e-12)
    assert all(a > b for a, b in itertools.pairwise(got))
    # a resume with more epochs follows the longer run's curve from the epoch it stands at
    more = TrainingConfig(epochs=8, lr=4e-3, min_lr=1e-4, lr_schedule="cosine", ema_decay=0.0)
    resumed = train(model.config, [sample], [], more, tmp_path, resume=True)
    assert [row["lr"] for row in resumed.history[5:]] == pytest.approx(
        [cosine_lr(4e-3, 1e-4, e, 8) for e in range(5, 8)], rel=1e-12
    )


def test_committee_is_the_mean_of_its_members() -> None:
    """``HamiltonianCommittee``: every block the element-wise mean of the members' blocks;
    one member is that model; members of another cutoff or basis are refused by name."""
    from atomshard.models.hamiltonian import HamiltonianCommittee

    a, b = _model(), _model(n_layers=1)
    graph = AtomicGraph.from_ase(_water_cluster(), a.cutoff)
    with torch.no_grad():
        pa, pb = a(graph), b(graph)
        pc = HamiltonianCommittee([a, b])(graph)
        alone = HamiltonianCommittee([a])(graph)
    for kind in ("node", "edge"):
        assert set(getattr(pc, kind)) == set(getattr(pa, kind))
        for key, (idx, blocks) in getattr(pc, kind).items():
            assert torch.equal(idx, getattr(pa, kind)[key][0])
            want = 0.5 * (getattr(pa, kind)[key][1] + getattr(pb, kind)[key][1])
            assert torch.allclose(blocks, want, atol=1e-12, rtol=0)
            assert not torch.allclose(blocks, getattr(pa, kind)[key][1], atol=1e-6)
            assert torch.equal(getattr(alone, kind)[key][1], getattr(pa, kind)[key][1])
    with pytest.raises(InputError, match=r"committee: b\.pt has cutoff 5\.0 Å, a\.pt has 4\.0 Å"):
        HamiltonianCommittee([a, _model(cutoff=5.0)], ["a.pt", "b.pt"])
    other = HamiltonianModel(HamiltonianConfig(basis={"O": "1s1p", "H": "1s"}, cutoff=4.0))
    with pytest.raises(InputError, match="committee: model 1 has another orbital basis"):
        HamiltonianCommittee([a, other])
    with pytest.raises(InputError, match="at least one model"):
        HamiltonianCommittee([])


def test_load_predictor_one_model_a_committee_and_a_wrong_checkpoint(tmp_path: Path) -> None:
    """``load_predictor``: one path gives that model, several their committee, and a
    checkpoint of another kind of model is one error naming the file."""
    from atomshard.models.hamiltonian import HamiltonianCommittee
    from atomshard.models.hamiltonian.committee import load_predictor
    from atomshard.models.pair import LennardJones

    a, b = _model(), _model(n_layers=1)
    for name, m in (("a.pt", a), ("b.pt", b)):
        save_checkpoint(tmp_path / name, m, model_type="hamiltonian", config=m.config)
    one = load_predictor([str(tmp_path / "a.pt")])
    assert isinstance(one, HamiltonianModel)
    both = load_predictor([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")])
    assert isinstance(both, HamiltonianCommittee) and len(both.members) == 2
    lj = LennardJones(cutoff=5.0)
    save_checkpoint(tmp_path / "lj.pt", lj, model_type="lennard-jones", config=lj.config)
    with pytest.raises(InputError, match=r"lj\.pt is not a Hamiltonian model"):
        load_predictor([str(tmp_path / "a.pt"), str(tmp_path / "lj.pt")])
