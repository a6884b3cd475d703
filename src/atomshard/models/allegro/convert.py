"""Import of nequip-allegro models into :class:`AllegroPotential` checkpoints.

:func:`allegro_config_and_weights` reads a built ``nequip-allegro`` 0.8 model (the
``GraphModel`` its ``AllegroModel`` builder returns, or one loaded from a training
checkpoint ``.ckpt`` or a ``.nequip.zip`` package by :func:`load_nequip_model`) module by
module: the architecture goes into an :class:`AllegroConfig`, the weights into our
parameter names. Anything our model does not express (per-edge-type cutoffs, trainable
Bessel frequencies, spline embeddings, biases, other pair potentials) is refused with a
:class:`~atomshard.errors.CheckpointError` naming it, never silently approximated.

What maps to what (``nequip-allegro`` module path -> atomshard):

==================================================  =================================
``radial_chemical_embed.type_embed.center_embed``    ``centre_embed``
``radial_chemical_embed.type_embed.neighbor_embed``  ``neighbour_embed``
``radial_chemical_embed.type_embed.basis_linear``    ``basis_linear``
``scalar_embed_mlp``                                 ``two_body``
``tensor_embed.env_embed_linear``                    ``tensor_embed``
``allegro.first_layer_env_embed_projection``         ``first_projection``
``allegro.tps.{t}.weights``                          ``products.{t}.weights``
``allegro.latents.{t}``                              ``latents.{t}``
``edge_readout``                                     ``readout``
``per_type_energy_scale_shift``                      ``config.energy_scale/shift``
``allegro.avg_num_neighbors_norm``                   ``config.avg_num_neighbors``
``pair_potential`` (ZBL, metal units)                ``config.zbl``
==================================================  =================================

Loading a ``.ckpt`` or ``.nequip.zip`` runs nequip's own loader (which unpickles): convert
only files you trust. The checkpoint written here loads with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atomshard.errors import CheckpointError, InputError
from atomshard.models.allegro.config import AllegroConfig
from atomshard.models.allegro.layers import ScalarMLP
from atomshard.models.allegro.model import AllegroPotential

_ACTIVATIONS = {"SiLU": "silu", "Mish": "mish", "GELU": "gelu", "Tanh": "tanh"}
_METAL_COULOMB = 14.399645


@contextlib.contextmanager
def nequip_global_state() -> Iterator[None]:
    """nequip's process-wide settings inside the block, ours restored after (also on error).

    nequip refuses to build or load a model before ``set_global_state()``, which sets
    the torch default dtype to float64, reseeds every RNG, changes e3nn's optimisation
    defaults, the TorchScript fusion strategy, two ``torch._dynamo`` flags and the
    multiprocessing sharing strategy, and sets an environment variable, for the rest of
    the process. This keeps those changes inside the block.
    """
    import e3nn
    import numpy as np
    from nequip.utils.global_state import set_global_state

    dynamo = torch._dynamo.config
    flags = ("capture_dynamic_output_shape_ops", "capture_scalar_outputs")
    dynamo_flags = {name: getattr(dynamo, name) for name in flags}
    fusion = torch.jit.set_fusion_strategy([("STATIC", 2)])  # reads the current one
    torch.jit.set_fusion_strategy(fusion)
    saved = (
        torch.get_default_dtype(),
        torch.get_rng_state(),
        np.random.get_state(),  # noqa: NPY002 (the legacy global state nequip reseeds)
        random.getstate(),
        e3nn.get_optimization_defaults(),
        torch.multiprocessing.get_sharing_strategy(),
        dict(os.environ),
    )
    try:
        set_global_state()
        torch.set_default_dtype(torch.float64)  # what nequip assumes, also when set before
        yield
    finally:
        dtype, rng, np_rng, py_rng, e3nn_defaults, sharing, env = saved
        torch.set_default_dtype(dtype)
        torch.set_rng_state(rng)
        np.random.set_state(np_rng)  # noqa: NPY002
        random.setstate(py_rng)
        e3nn.set_optimization_defaults(**e3nn_defaults)
        torch.multiprocessing.set_sharing_strategy(sharing)
        torch.jit.set_fusion_strategy(fusion)
        for name, value in dynamo_flags.items():
            setattr(dynamo, name, value)
        for key in set(os.environ) - set(env):
            del os.environ[key]
        os.environ.update(env)


def load_nequip_model(path: str | Path) -> nn.Module:
    """A nequip-allegro model from a training checkpoint (``.ckpt``) or a package
    (``.nequip.zip``), by nequip's own loader (needs ``nequip`` and ``allegro``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"nequip-allegro model {str(path)!r}: no such file")
    try:
        from nequip.model.saved_models.load_utils import load_saved_model
    except ImportError:
        raise InputError(
            "reading a nequip-allegro file needs nequip and nequip-allegro "
            "(pip install 'atomshard[allegro-reference]')"
        ) from None
    try:
        with nequip_global_state():
            return load_saved_model(str(path))
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a nequip checkpoint or package nequip can read: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def _unsupported(what: str) -> CheckpointError:
    return CheckpointError(f"nequip-allegro model: {what} is not supported by atomshard's Allegro")


def _energy_graph(model: nn.Module) -> Any:
    """The ``SequentialGraphNetwork`` of named modules inside a ``GraphModel``."""
    inner = model
    for name in ("model", "func"):
        inner = getattr(inner, name, inner)
    if not hasattr(inner, "allegro"):
        raise CheckpointError(
            f"not a nequip-allegro AllegroModel (found {type(model).__name__} without an "
            "'allegro' module)"
        )
    return inner


def _mlp(module: Any, where: str) -> tuple[list[int], str | None, list[torch.Tensor], float]:
    """Widths, activation, weights and the product of scales of a ``ScalarMLPFunction``."""
    mlp = getattr(module, "mlp_module", module).mlp
    if type(mlp).__name__ == "DeepLinearMLP":
        weights = [w.detach() for w in mlp.weights]
        widths = [weights[0].shape[0], *(w.shape[1] for w in weights)]
        return widths, None, weights, float(mlp.alpha)
    weights, acts, alpha = [], set(), 1.0
    for layer in mlp:
        name = type(layer).__name__
        if name == "ScalarLinearLayer":
            if layer.bias is not None:
                raise _unsupported(f"a bias in {where}")
            if type(getattr(layer, "parametrizations", None)).__name__ == "ModuleDict":
                raise _unsupported(f"a weight parametrization in {where}")
            weights.append(layer.weight.detach())
            alpha *= float(layer.alpha)
        elif name in _ACTIVATIONS:
            acts.add(_ACTIVATIONS[name])
        else:
            raise _unsupported(f"the {name} layer in {where}")
    if len(acts) > 1:
        raise _unsupported(f"mixed activations in {where}")
    widths = [weights[0].shape[0], *(w.shape[1] for w in weights)]
    return widths, (acts.pop() if acts else None), weights, alpha


def _per_type(values: Any, n: int, default: float) -> tuple[float, ...]:
    if values.numel() == 0:
        return (default,)
    v = values.detach().to(torch.float64).reshape(-1)
    return tuple(float(x) for x in (v.expand(n) if v.numel() == 1 else v))


def _species(g: Any, type_names: list[str], species: Any) -> tuple[int, ...]:
    from ase.data import atomic_numbers

    if species is not None:
        out = tuple(int(z) for z in species)
        if len(out) != len(type_names):
            raise InputError(
                f"species: {len(out)} atomic numbers for {len(type_names)} types {type_names}"
            )
        return out
    pair = getattr(g, "pair_potential", None)
    if pair is not None and hasattr(pair, "atomic_numbers"):
        return tuple(round(float(z)) for z in pair.atomic_numbers)
    unknown = [t for t in type_names if t not in atomic_numbers]
    if unknown:
        raise InputError(
            f"type names {unknown} are not chemical symbols: pass species= (atomic numbers "
            f"in the order {type_names})"
        )
    return tuple(atomic_numbers[t] for t in type_names)


def allegro_config_and_weights(
    model: nn.Module, *, species: Any = None
) -> tuple[AllegroConfig, dict[str, torch.Tensor]]:
    """The :class:`AllegroConfig` and our state dict of a nequip-allegro model.

    Args:
        model: a ``GraphModel`` built by ``allegro.model.AllegroModel`` (or loaded).
        species: atomic numbers of its types, in type order, where its type names are not
            chemical symbols and it has no ZBL term naming them.
    """
    g = _energy_graph(model)
    if getattr(g.edge_norm, "_per_edge_type", False):
        raise _unsupported("a per-edge-type cutoff")
    r_max = 1.0 / float(g.edge_norm._rmax_recip)
    embed = g.radial_chemical_embed
    if not hasattr(embed, "bessel_encode"):
        raise _unsupported(f"the radial-chemical embedding {type(embed).__name__}")
    bessel = embed.bessel_encode.bessel_weights.detach().reshape(-1)
    n_bessel = bessel.numel()
    if not torch.equal(
        bessel.to(torch.float64), torch.arange(1.0, n_bessel + 1, dtype=torch.float64)
    ):
        raise _unsupported("trained Bessel frequencies")
    p = float(embed.bessel_encode.cutoff.p)
    type_embed = embed.type_embed
    n_types = type_embed.center_embed.weight.shape[0]
    a = g.allegro
    tensor = g.tensor_embed
    if not (
        a._env_weighter.weight_individual_irreps and tensor._edge_weighter.weight_individual_irreps
    ):
        raise _unsupported("weight_individual_irreps=False")
    sh_irreps = a.irreps_in[a.tensor_basis_in_field]
    l_max = max(ir.l for _, ir in sh_irreps)
    allowed = a.tensor_track_allowed_irreps
    parity = len(allowed) == 2 * (l_max + 1)
    pp: Any = g.pair_potential if hasattr(g, "pair_potential") else None
    zbl = pp is not None
    if zbl:
        if type(pp).__name__ != "ZBL":
            raise _unsupported(f"the pair potential {type(pp).__name__}")
        if not math.isclose(float(pp._qqr2exesquare), 0.5 * _METAL_COULOMB, rel_tol=1e-12):
            raise _unsupported("ZBL in units other than LAMMPS 'metal' (eV, Å)")
        if float(pp.cutoff.p) != p:
            raise _unsupported("a ZBL cutoff degree different from the embedding's")
    if hasattr(g, "per_type_energy_scale_shift"):
        ss = g.per_type_energy_scale_shift
        scale, shift = _per_type(ss.scales, n_types, 1.0), _per_type(ss.shifts, n_types, 0.0)
    else:
        scale, shift = (1.0,), (0.0,)
    norm = a.avg_num_neighbors_norm.norm_const.detach().to(torch.float64).reshape(-1)
    readout_norm = g.edge_eng_sum.norm_module.norm_const.detach().to(torch.float64).reshape(-1)
    if not torch.allclose(norm, readout_norm, rtol=1e-12, atol=0):
        raise _unsupported("different avg_num_neighbors in the layers and the readout")
    avg = tuple(float(1.0 / c**2) for c in norm)

    two_body = _mlp(g.scalar_embed_mlp, "scalar_embed_mlp")
    latents = [_mlp(m, f"allegro.latents.{t}") for t, m in enumerate(a.latents)]
    readout = _mlp(g.edge_readout, "edge_readout")
    acts = {lat[1] for lat in latents}
    hidden = {tuple(lat[0][1:-1]) for lat in latents}
    if len(acts) > 1 or len(hidden) > 1:
        raise _unsupported("Allegro MLPs that differ between layers")
    body = two_body[2][0].dtype
    coupling = a.tps[0].path_channel_coupling
    config = AllegroConfig(
        species=_species(
            g, list(getattr(model, "type_names", [])) or _type_names(model, n_types), species
        ),
        cutoff=r_max,
        l_max=l_max,
        parity=parity,
        n_layers=int(a.num_layers),
        n_scalar=int(a.num_scalar_features),
        n_tensor=int(a.num_tensor_features),
        n_bessel=n_bessel,
        cutoff_p=int(p),
        embed_dim=int(type_embed.center_embed.weight.shape[1] * 2),
        two_body_hidden=tuple(two_body[0][1:-1]),
        two_body_out=None if two_body[0][-1] == a.num_scalar_features else two_body[0][-1],
        two_body_activation=two_body[1],
        allegro_hidden=hidden.pop(),
        allegro_activation=acts.pop(),
        readout_hidden=tuple(readout[0][1:-1]),
        readout_activation=readout[1],
        path_channel_coupling=bool(coupling),
        forward_normalize=_forward_normalized(two_body, latents),
        avg_num_neighbors=avg,
        energy_shift=shift,
        energy_scale=scale,
        zbl=zbl,
        dtype="float64" if body == torch.float64 else "float32",
    )
    ours = AllegroPotential(config)
    state: dict[str, torch.Tensor] = {
        "centre_embed": type_embed.center_embed.weight.detach(),
        "neighbour_embed": type_embed.neighbor_embed.weight.detach(),
    }
    pairs = [
        ("basis_linear", _mlp(type_embed.basis_linear, "basis_linear")),
        ("two_body", two_body),
        ("tensor_embed", _mlp(tensor.env_embed_linear, "tensor_embed.env_embed_linear")),
        ("first_projection", _mlp(a.first_layer_env_embed_projection, "first projection")),
        *((f"latents.{t}", lat) for t, lat in enumerate(latents)),
        ("readout", readout),
    ]
    for name, (widths, _, weights, alpha) in pairs:
        mine: ScalarMLP = ours.get_submodule(name)  # type: ignore[assignment]
        if mine.widths != widths or not math.isclose(math.prod(mine.alphas), alpha, rel_tol=1e-6):
            raise _unsupported(
                f"{name}: widths {widths} / scale {alpha:.6g} (expected {mine.widths} / "
                f"{math.prod(mine.alphas):.6g})"
            )
        for k, w in enumerate(weights):
            state[f"{name}.weights.{k}"] = w
    for t, tp in enumerate(a.tps):
        mine_tp = ours.products[t]
        if str(tp.irreps_out) != str(mine_tp.irreps_out) or str(tp.irreps_in1) != str(
            mine_tp.irreps_in
        ):
            raise _unsupported(f"tensor product {t} irreps {tp.irreps_in1} -> {tp.irreps_out}")
        if tp.instructions is not None:
            raise _unsupported(f"explicit tensor-product instructions in layer {t}")
        state[f"products.{t}.weights"] = tp.weights.detach().reshape(mine_tp.weights.shape)
    missing = set(ours.state_dict()) - set(state)
    if missing:
        raise CheckpointError(f"conversion left weights unset: {sorted(missing)}")
    return config, {k: v.clone().to(ours.state_dict()[k].dtype) for k, v in state.items()}


def _type_names(model: Any, n_types: int) -> list[str]:
    meta = getattr(model, "metadata", None) or getattr(model, "_metadata", None) or {}
    names = str(meta.get("type_names", "")).split()
    return names if len(names) == n_types else [str(i) for i in range(n_types)]


def _forward_normalized(two_body: tuple, latents: list) -> bool:
    """Whether the MLPs scale by fan-in (the first layer of a nonlinear MLP has gain 1)."""
    widths, act, _, alpha = two_body
    if act is None or len(widths) < 3:
        return True
    fwd = ScalarMLP(widths, act, forward_normalize=True)
    return math.isclose(math.prod(fwd.alphas), alpha, rel_tol=1e-6)


def convert_allegro_model(
    model: nn.Module | str | Path, target: str | Path, *, species: Any = None
) -> AllegroPotential:
    """Write a nequip-allegro model (module, ``.ckpt`` or ``.nequip.zip``) as an atomshard
    checkpoint at ``target``; returns the converted model."""
    from atomshard.models.checkpoint import save_checkpoint

    source = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    module = load_nequip_model(model) if isinstance(model, (str, Path)) else model
    config, state = allegro_config_and_weights(module, species=species)
    ours = AllegroPotential(config)
    ours.load_state_dict(state)
    save_checkpoint(
        target, ours, model_type="allegro", config=config,
        metadata={"converted_from": source, "source_format": "nequip-allegro"},
    )  # fmt: skip
    return ours.eval()
