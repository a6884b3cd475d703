"""The NequIP-class potential: physical properties, config errors, checkpoints, exchange."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from atomshard.errors import CheckpointError, InputError
from atomshard.graph import AtomicGraph
from atomshard.models import compute_properties
from atomshard.models.checkpoint import load_model, save_checkpoint
from atomshard.models.potential import NequIPConfig, NequIPPotential, preset
from atomshard.testing import PotentialPropertyTests, default_structures, random_structure

SPECIES = (8, 14)


def tiny_config(**changes) -> NequIPConfig:
    base = dict(
        species=SPECIES,
        cutoff=3.5,
        channels=4,
        l_max=2,
        n_layers=2,
        radial_hidden=(8,),
        avg_num_neighbors=8.0,
        energy_shift=(-1.5, -3.0),
        energy_scale=0.7,
        dtype="float64",
    )
    base.update(changes)
    return NequIPConfig(**base)


def tiny_model(seed: int = 0, **changes) -> NequIPPotential:
    torch.manual_seed(seed)
    return NequIPPotential.from_config(tiny_config(**changes)).eval()


class TestO3Properties(PotentialPropertyTests):
    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return tiny_model(self_connection="species", cutoff_kind="polynomial")

    @pytest.fixture(scope="class")
    @classmethod
    def property_structures(cls):
        return default_structures(SPECIES, n_atoms=5)


class TestSO3XplorProperties(PotentialPropertyTests):
    """SevenNet-0-like: no parity, XPLOR cutoff, linear self-connection."""

    reflection_invariant = False

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return tiny_model(1, parity=False, cutoff_kind="xplor", cutoff_on=3.0)

    @pytest.fixture(scope="class")
    @classmethod
    def property_structures(cls):
        return default_structures(SPECIES, n_atoms=5, seed=3)[:2]


def test_so3_model_is_not_reflection_invariant():
    """Shows the reflection check can fail: a parity-free model sees handedness."""
    from atomshard.testing import check_rotation

    model = tiny_model(2, parity=False, n_layers=3)  # a triple product needs 3 layers
    atoms = random_structure(SPECIES, 6, periodic=False, seed=5, density=0.1)
    with pytest.raises(AssertionError, match="under reflection"):
        check_rotation(model, atoms, reflect=True)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"species": ()}, "species"),
        ({"species": (8, 8)}, "species"),
        ({"species": (0,)}, "species"),
        ({"cutoff": -1.0}, "cutoff"),
        ({"channels": 0}, "channels"),
        ({"l_max": -1}, "l_max"),
        ({"n_layers": 2, "avg_num_neighbors": (1.0, 2.0, 3.0)}, "avg_num_neighbors"),
        ({"dtype": "float16"}, "dtype"),
        ({"cutoff_kind": "cosine"}, "cutoff_kind"),
        ({"cutoff_kind": "xplor", "cutoff_on": 9.0}, "cutoff_on"),
        ({"energy_shift": (1.0, 2.0, 3.0)}, "energy_shift"),
        ({"energy_scale": 0.0}, "energy_scale"),
        ({"hidden_irreps": ("4x0e", "4x0e")}, "hidden_irreps"),
        ({"hidden_irreps": ("4x0e", "4x1o", "4x1o")}, "hidden_irreps"),
        ({"radial_activation": "nope"}, "radial_activation"),
        ({"self_connection": "dense"}, "self_connection"),
    ],
)
def test_config_errors_name_field_and_value(changes, field):
    with pytest.raises(InputError, match=rf"NequIPConfig\.{field}="):
        tiny_config(**changes)


def test_presets_and_unknown_preset():
    cfg = preset("si-config", species=SPECIES)
    assert (cfg.channels, cfg.n_layers, cfg.l_max, cfg.cutoff) == (32, 4, 3, 4.0)
    assert len(cfg.avg_num_neighbors) == 4  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown NequIP preset"):
        preset("XXL", species=SPECIES)


def _quartz_graph(cutoff: float) -> AtomicGraph:
    from atomshard.io.structures import builtin_structure

    atoms = builtin_structure("quartz")
    atoms.rattle(0.05, seed=3)
    return AtomicGraph.from_ase(atoms, cutoff)


def test_checkpoint_round_trip_and_dtype_override(tmp_path):
    model = tiny_model(4, dtype="float32")
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, model_type="potential", config=model.config, metadata={"a": 1})
    graph = _quartz_graph(model.cutoff)
    loaded = load_model(path)
    assert isinstance(loaded, NequIPPotential) and loaded.config == model.config
    e0 = compute_properties(model, graph).energy
    torch.testing.assert_close(compute_properties(loaded, graph).energy, e0, rtol=0, atol=0)
    as64 = load_model(path, dtype=torch.float64)
    assert as64.body_dtype == torch.float64
    assert abs(float(compute_properties(as64, graph).energy - e0)) < 1e-4 * abs(float(e0)) + 1e-4
    broken = tmp_path / "broken.pt"
    save_checkpoint(
        broken, model, model_type="potential", config=dataclasses.replace(model.config, channels=5)
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(broken)


def test_exchange_is_called_before_every_layer_on_all_rows():
    model = tiny_model(5, n_layers=3)
    graph = _quartz_graph(model.cutoff)
    rows: list[tuple[int, ...]] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        rows.append(tuple(x.shape))
        return x

    e_identity = compute_properties(model, graph, exchange=counting).energy
    assert len(rows) == 3 and all(r[0] == graph.n_atoms for r in rows)

    def scaling(x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x

    e_scaled = compute_properties(model, graph, exchange=scaling).energy
    assert abs(float(e_scaled - e_identity)) > 1e-6  # its output is what the layer uses


def test_float32_body_agrees_with_float64():
    m64 = tiny_model(6)
    m32 = NequIPPotential.from_config(dataclasses.replace(m64.config, dtype="float32"))
    m32.load_state_dict(m64.state_dict())
    graph = _quartz_graph(m64.cutoff)
    p64, p32 = compute_properties(m64, graph), compute_properties(m32, graph)
    assert p32.energy.dtype == torch.float64 and p32.forces is not None
    assert abs(float(p64.energy - p32.energy)) < 1e-4
    assert float((p64.forces - p32.forces).abs().max()) < 1e-4  # type: ignore[operator]


def test_unknown_element_is_an_input_error():
    from ase import Atoms

    model = tiny_model()
    atoms = Atoms("SiC", positions=[[0, 0, 0], [1.8, 0, 0]])
    with pytest.raises(InputError, match=r"atom 1 is C \(Z=6\)"):
        compute_properties(model, AtomicGraph.from_ase(atoms, model.cutoff))


def _saved_bytes(run) -> int:
    """Bytes of the distinct storages autograd saves for the backward while ``run()``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def test_force_evaluation_freezes_parameters_and_saves_less():
    """compute_properties without create_graph runs with the parameters frozen: the same
    energy/forces/stress as with create_graph (where they stay trainable), far fewer saved
    bytes (the linears' inputs are not kept for weight gradients), and every parameter's
    requires_grad back as it was afterwards, also after an error inside."""
    model = tiny_model(channels=8)
    frozen_one = next(model.parameters())
    frozen_one.requires_grad_(False)  # a user-frozen parameter stays frozen
    structure = random_structure(SPECIES, 12, seed=3)
    graph = AtomicGraph.from_ase(structure, model.cutoff)
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    seen: list[bool] = []
    layer = model.interaction(0)
    hook = layer.register_forward_pre_hook(
        lambda mod, args: seen.append(any(p.requires_grad for p in mod.parameters()))
    )
    out: dict[bool, object] = {}
    saved = {}
    for cg in (False, True):

        def run(cg: bool = cg) -> None:
            out[cg] = compute_properties(model, graph, create_graph=cg)

        saved[cg] = _saved_bytes(run)
    hook.remove()
    assert seen == [False, True]
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    assert saved[False] < 0.7 * saved[True], saved
    a, b = out[False], out[True]
    torch.testing.assert_close(a.energy, b.energy.detach(), rtol=0, atol=0)
    torch.testing.assert_close(a.forces, b.forces.detach(), rtol=0, atol=1e-14)
    torch.testing.assert_close(a.stress, b.stress.detach(), rtol=0, atol=1e-14)

    def boom(*args):
        raise RuntimeError("inside the model")

    hook = layer.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="inside the model"):
        compute_properties(model, graph)
    hook.remove()
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before


def test_layer_checkpoints_same_numbers_fewer_saved_bytes(monkeypatch):
    """checkpoint=True keeps only each layer's input (and the edge vectors) for the backward:
    energy bitwise and forces/stress identical to the stored path, with chunked and
    recomputed convolutions alike, and less saved outside the checkpointed regions;
    "auto" follows activation_bytes against AUTO_CHECKPOINT_BYTES, the runtime never
    checkpoints, and a bad setting is an InputError naming it."""
    import atomshard.models.potential.model as model_module

    model = tiny_model(channels=8)
    graph = _quartz_graph(model.cutoff)
    for recompute in (False, True):
        model.set_convolution(recompute=recompute, chunk_edges=64)
        out, saved = {}, {}
        for on in (False, True):
            model.set_convolution(checkpoint=on)

            def run(on: bool = on, out: dict = out) -> None:
                out[on] = compute_properties(model, graph)

            saved[on] = _saved_bytes(run)
        assert saved[True] < 0.6 * saved[False], (recompute, saved)
        a, b = out[False], out[True]
        torch.testing.assert_close(b.energy, a.energy, rtol=0, atol=0)
        torch.testing.assert_close(b.forces, a.forces, rtol=0, atol=1e-14)
        torch.testing.assert_close(b.stress, a.stress, rtol=0, atol=1e-14)

    grads = {}
    for on in (False, True):  # training: a force loss differentiates through the checkpoints
        model.set_convolution(checkpoint=on, recompute=True)
        model.zero_grad()
        p = compute_properties(model, graph, create_graph=True)
        (p.energy**2 + (p.forces**2).sum()).backward()  # type: ignore[operator]
        grads[on] = torch.cat([q.grad.flatten() for q in model.parameters() if q.grad is not None])
    torch.testing.assert_close(grads[True], grads[False], rtol=0, atol=1e-12)

    model.set_convolution(checkpoint="auto")
    assert model.activation_bytes(graph.n_atoms) == graph.n_atoms * 8 * sum(
        model.interaction(t).irreps_in.dim + model.interaction(t).gate.irreps_in.dim
        for t in range(len(model.layers))
    )  # float64 body
    assert not model.checkpointed(graph, lambda x: x)
    monkeypatch.setattr(model_module, "AUTO_CHECKPOINT_BYTES", 1000)
    assert model.checkpointed(graph, lambda x: x)

    class Halo:  # an exchange with halo rows: the graph-parallel runtime
        n_owned = graph.n_atoms - 1

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return x

    assert not model.set_convolution(checkpoint=True).checkpointed(graph, Halo())
    with torch.no_grad():
        assert not model.checkpointed(graph, lambda x: x)
    with pytest.raises(InputError, match="checkpoint='sometimes'"):
        model.set_convolution(checkpoint="sometimes")
