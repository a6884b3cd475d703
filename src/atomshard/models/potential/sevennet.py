"""Import of SevenNet checkpoints into :class:`NequIPPotential` checkpoints.

SevenNet checkpoints (``{'config', 'model_state_dict', ...}``) pickle numpy arrays and a
``torch.device``; they are read with ``torch.load(weights_only=True)`` and an explicit
allow-list of exactly those globals — never with ``weights_only=False``. No ``sevenn``
code is imported: the wheel is only located (``importlib.util.find_spec``) to find its
``pretrained_potentials`` folder.

What the conversion maps (SevenNet's NequIP block, ``interaction_type: nequip``):

=====================================  ========================================
SevenNet                               atomshard
=====================================  ========================================
``edge_embedding.basis_function.coeffs``  ``radial_basis.frequencies``
``onehot_to_feature_x.linear``            ``embedding``
``{t}_self_connection_intro``             ``layers.{t}.self_connection``
``{t}_self_interaction_1.linear``         ``layers.{t}.linear_1``
``{t}_convolution.weight_nn.layer{k}``    ``layers.{t}.radial.weights.{k}``
``{t}_convolution.denominator``           ``config.avg_num_neighbors[t]`` (its square)
``{t}_self_interaction_2.linear``         ``layers.{t}.linear_2``
``reduce_input_to_hidden`` / ``..energy`` ``readout_1`` / ``readout_2``
``rescale_atomic_energy.shift/scale``     ``config.energy_shift/energy_scale``
=====================================  ========================================

Checkpoints written before SevenNet 0.11 list the convolution paths unsorted and some
were trained with Wigner-3j symbols of the opposite sign (older e3nn); the radial MLP's
output columns are reordered to the sorted path order and negated where the stored
3j symbol is the negative of today's, which leaves the model's function unchanged.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
from pathlib import Path
from typing import Any

import torch

from atomshard.errors import CheckpointError, InputError
from atomshard.models.potential.config import NequIPConfig
from atomshard.models.potential.model import NequIPPotential, convolution_paths, filter_irreps

#: Known pretrained names (lower-case, ``-``/``_`` insensitive) -> folder/file in the wheel.
PRETRAINED: dict[str, str] = {
    "sevennet-0": "SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
    "7net-0": "SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
    "sevennet-0-11jul2024": "SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
    "sevennet-0-22may2024": "SevenNet_0__22May2024/checkpoint_sevennet_0.pth",
    "sevennet-l3i5": "SevenNet_l3i5/checkpoint_l3i5.pth",
    "7net-l3i5": "SevenNet_l3i5/checkpoint_l3i5.pth",
}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace("--", "-")


def _pretrained_dir() -> Path:
    spec = importlib.util.find_spec("sevenn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the sevenn package is not installed, so its pretrained checkpoints cannot be "
            "found; install it (pip install 'atomshard[sevennet]') or pass a checkpoint path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained_potentials"


def find_sevennet_checkpoint(name_or_path: str | Path) -> Path:
    """Path of a SevenNet checkpoint given a file path or a pretrained name.

    Names: ``SevenNet-0`` / ``7net-0`` (11 July 2024), ``SevenNet-0_11July2024``,
    ``SevenNet-0_22May2024``, ``SevenNet-l3i5`` / ``7net-l3i5`` (case and ``-``/``_``
    insensitive), looked up in the installed ``sevenn`` wheel.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    key = _key(str(name_or_path)).replace("july", "jul")
    if key not in PRETRAINED:
        looks_like_path = path.suffix in {".pth", ".pt"} or len(path.parts) > 1
        what = "no such file" if looks_like_path else "unknown SevenNet model name"
        raise InputError(
            f"SevenNet checkpoint {str(name_or_path)!r}: {what}; known names: "
            f"SevenNet-0, 7net-0, SevenNet-0_11July2024, SevenNet-0_22May2024, SevenNet-l3i5"
        )
    found = _pretrained_dir() / PRETRAINED[key]
    if not found.is_file():
        raise InputError(
            f"SevenNet model {str(name_or_path)!r}: {found} is missing from the installed "
            "sevenn package"
        )
    return found


def _safe_globals() -> list[Any]:
    """The few non-tensor globals SevenNet checkpoints pickle, and nothing else."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed: list[Any] = [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        torch.device,
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in (
            "Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
            "Int32DType", "Int64DType", "UInt8DType", "BoolDType", "StrDType",
        ):  # fmt: skip
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


def read_sevennet_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a SevenNet checkpoint dict safely (``weights_only=True`` + allow-list)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SevenNet checkpoint {str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"{str(path)!r} is not a readable SevenNet checkpoint: {type(exc).__name__}: {first}"
        ) from exc
    if not isinstance(data, dict) or "config" not in data or "model_state_dict" not in data:
        raise CheckpointError(
            f"{str(path)!r} is not a SevenNet checkpoint (no 'config'/'model_state_dict')"
        )
    return data


def _version(config: dict[str, Any]) -> tuple[tuple[int, ...], str]:
    text = str(config.get("version", "0.0.0"))
    parts = text.split(".")
    nums = tuple(int(p) for p in parts[:3] if p.isdigit())
    return nums, parts[3] if len(parts) > 3 else ""


def _floats(value: Any) -> list[float]:
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.flatten().tolist()]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


def sevennet_config(
    cfg: dict[str, Any], state: dict[str, torch.Tensor], *, where: str
) -> NequIPConfig:
    """Map a SevenNet model config (and the values stored with its weights) to ours."""
    from ase.data import atomic_numbers as z_of

    def unsupported(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: {what} is not supported by the SevenNet import")

    if cfg.get("interaction_type", "nequip") != "nequip":
        raise unsupported(f"interaction_type {cfg.get('interaction_type')!r}")
    if cfg.get("use_modality", False):
        raise unsupported("a multi-fidelity (modal) model")
    if cfg.get("readout_as_fcn", False):
        raise unsupported("readout_as_fcn: True")
    if (cfg.get("cuequivariance_config") or {}).get("use", False):
        raise unsupported("a cuEquivariance-layout checkpoint (convert it to e3nn first)")
    n_layers = int(cfg["num_convolution_layer"])
    sc = cfg.get("self_connection_type", "nequip")
    sc_types = set(sc) if isinstance(sc, list) else {sc}
    if len(sc_types) != 1:
        raise unsupported(f"mixed self_connection_type {sc}")
    self_connection = {"linear": "linear", "nequip": "species", "none": "none"}.get(sc_types.pop())
    if self_connection is None:
        raise unsupported(f"self_connection_type {sc!r}")
    lmax_edge = int(cfg.get("lmax_edge", -1))
    lmax_node = int(cfg.get("lmax_node", -1))
    l_max = int(cfg["lmax"])
    if lmax_edge not in (-1, l_max) or lmax_node not in (-1, l_max):
        raise unsupported(f"lmax_edge/lmax_node different from lmax ({lmax_edge}, {lmax_node})")
    type_map = cfg.get("_type_map")
    if not isinstance(type_map, dict):
        names = sorted(cfg["chemical_species"])
        type_map = {z_of[s]: i for i, s in enumerate(names)}
    species = tuple(int(z) for z, _ in sorted(type_map.items(), key=lambda kv: kv[1]))

    rb = dict(cfg.get("radial_basis", {"radial_basis_name": "bessel"}))
    if rb.get("radial_basis_name", "bessel") != "bessel":
        raise unsupported(f"radial basis {rb.get('radial_basis_name')!r}")
    cf = dict(cfg.get("cutoff_function", {"cutoff_function_name": "poly_cut"}))
    kind = {"poly_cut": "polynomial", "XPLOR": "xplor"}.get(cf.get("cutoff_function_name", ""))
    if kind is None:
        raise unsupported(f"cutoff function {cf.get('cutoff_function_name')!r}")

    denominators = [_floats(state[f"{t}_convolution.denominator"])[0] for t in range(n_layers)]
    shift = _floats(state["rescale_atomic_energy.shift"])
    scale = _floats(state["rescale_atomic_energy.scale"])
    manual = cfg.get("irreps_manual", False)
    act = lambda d: (d.get("e", "silu"), d.get("o", "tanh"))  # noqa: E731
    return NequIPConfig(
        species=species,
        cutoff=float(cfg["cutoff"]),
        channels=int(cfg["channel"]),
        l_max=l_max,
        n_layers=n_layers,
        parity=bool(cfg.get("is_parity", True)),
        hidden_irreps=tuple(str(s) for s in manual) if manual else None,
        n_radial=int(rb.get("bessel_basis_num", 8)),
        trainable_radial=bool(rb.get("trainable_coeff", True)),
        radial_hidden=tuple(int(h) for h in cfg.get("weight_nn_hidden_neurons", [64, 64])),
        radial_activation=str(cfg.get("act_radial", "silu")),
        cutoff_kind=kind,
        cutoff_p=int(cf.get("poly_cut_p_value", 6)),
        cutoff_on=float(cf.get("cutoff_on", 0.0)) if kind == "xplor" else 0.0,
        # before 0.10 SevenNet took harmonics of the raw edge vector unless told otherwise
        normalize_sh=bool(cfg.get("_normalize_sph", _version(cfg)[0] >= (0, 10))),
        # d is stored in float32: d*d is exact in float64 and sqrt(d*d) gives d back.
        avg_num_neighbors=tuple(d * d for d in denominators),
        self_connection=self_connection,
        scalar_activation=act(cfg.get("act_scalar", {})),
        gate_activation=act(cfg.get("act_gate", {})),
        linear_biases=bool(cfg.get("use_bias_in_linear", False)),
        energy_shift=tuple(shift) if len(shift) > 1 else shift[0],
        energy_scale=tuple(scale) if len(scale) > 1 else scale[0],
        dtype="float32",
    )


_OLD_MODULE_NAMES = {
    "EdgeEmbedding": "edge_embedding",
    "reducing nn input to hidden": "reduce_input_to_hidden",
    "reducing nn hidden to energy": "reduce_hidden_to_energy",
    "rescale atomic energy": "rescale_atomic_energy",
}


def _modern_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module names of checkpoints before SevenNet 0.10 ("0 convolution") made current."""
    out = {}
    for key, value in state.items():
        head, _, tail = key.partition(".")
        head = _OLD_MODULE_NAMES.get(head, head.replace(" ", "_"))
        tail = tail.replace("denumerator", "denominator")
        out[f"{head}.{tail}"] = value
    return out


def _old_layout(cfg: dict[str, Any]) -> bool:
    nums, suffix = _version(cfg)
    return nums < (0, 11, 0) or (nums == (0, 11, 0) and suffix == "dev0")


def _radial_output(
    model: NequIPPotential, t: int, weight: torch.Tensor, state: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Reorder (and fix signs of) the last radial-MLP weight of a pre-0.11 checkpoint.

    Shapes:
        weight: ``[hidden, weight_numel]``, columns in SevenNet's unsorted path order
        returns: ``[hidden, weight_numel]``, columns in sorted path order
    """
    from e3nn.o3 import wigner_3j

    layer = model.interaction(t)
    filt = filter_irreps(model.config)
    mid, sorted_paths = convolution_paths(
        layer.irreps_in, filt, layer.irreps_out.lmax, t == model.config.n_layers - 1
    )
    # the unsorted order is the generation order: re-derive it from the sorted one
    order = sorted(range(len(sorted_paths)), key=lambda n: (sorted_paths[n][0], sorted_paths[n][1]))
    blocks, start = {}, 0
    for n in order:
        i, j, k = sorted_paths[n][:3]
        mul = layer.irreps_in[i].mul
        block = weight[:, start : start + mul]
        start += mul
        l1, l2, l3 = layer.irreps_in[i].ir.l, filt[j].ir.l, mid[k].ir.l
        old = state.get(
            f"{t}_convolution.convolution._compiled_main_left_right._w3j_{l1}_{l2}_{l3}"
        )
        if old is not None:
            now = wigner_3j(l1, l2, l3).to(old.dtype)
            if not torch.allclose(old, now, atol=1e-6):
                if not torch.allclose(old, -now, atol=1e-6):
                    raise CheckpointError(f"layer {t}: stored 3j symbol ({l1},{l2},{l3}) unknown")
                block = -block
        blocks[n] = block
    if start != weight.shape[1]:
        raise CheckpointError(
            f"layer {t}: radial MLP has {weight.shape[1]} outputs, expected {start}"
        )
    return torch.cat([blocks[n] for n in range(len(sorted_paths))], dim=1)


def sevennet_state_dict(
    model: NequIPPotential, cfg: dict[str, Any], state: dict[str, torch.Tensor], *, where: str
) -> dict[str, torch.Tensor]:
    """Our state dict for ``model`` filled with the SevenNet weights ``state``."""
    ours = model.state_dict()
    mapped: set[str] = set()

    def put(our_key: str, their_key: str, value: torch.Tensor | None = None) -> None:
        if their_key not in state:
            raise CheckpointError(f"{where}: weight {their_key!r} is missing")
        v = state[their_key] if value is None else value
        if tuple(v.shape) != tuple(ours[our_key].shape):
            raise CheckpointError(
                f"{where}: {their_key} has shape {tuple(v.shape)}, expected "
                f"{tuple(ours[our_key].shape)} for {our_key}"
            )
        ours[our_key] = v.to(ours[our_key].dtype)
        mapped.add(our_key)

    def put_linear(ours_prefix: str, theirs_prefix: str) -> None:
        put(f"{ours_prefix}.weight", f"{theirs_prefix}.weight")
        if f"{ours_prefix}.bias" in ours and ours[f"{ours_prefix}.bias"].numel():
            put(f"{ours_prefix}.bias", f"{theirs_prefix}.bias")

    if "edge_embedding.basis_function.coeffs" in state:
        put("radial_basis.frequencies", "edge_embedding.basis_function.coeffs")
    else:  # fixed frequencies: SevenNet evaluates them in float32
        freqs = ours["radial_basis.frequencies"].to(torch.float32).to(torch.float64)
        ours["radial_basis.frequencies"] = freqs
        mapped.add("radial_basis.frequencies")
    put_linear("embedding", "onehot_to_feature_x.linear")
    old = _old_layout(cfg)
    for t in range(model.config.n_layers):
        if model.config.self_connection == "linear":
            put_linear(f"layers.{t}.self_connection", f"{t}_self_connection_intro.linear")
        elif model.config.self_connection == "species":
            put(
                f"layers.{t}.self_connection.weight",
                f"{t}_self_connection_intro.fc_tensor_product.weight",
            )
        put_linear(f"layers.{t}.linear_1", f"{t}_self_interaction_1.linear")
        put_linear(f"layers.{t}.linear_2", f"{t}_self_interaction_2.linear")
        n_mlp = len(model.interaction(t).radial.weights)
        for k in range(n_mlp):
            key = f"{t}_convolution.weight_nn.layer{k}.weight"
            value = state.get(key)
            if value is not None and old and k == n_mlp - 1:
                value = _radial_output(model, t, value, state)
            put(f"layers.{t}.radial.weights.{k}", key, value)
    put_linear("readout_1", "reduce_input_to_hidden.linear")
    put_linear("readout_2", "reduce_hidden_to_energy.linear")
    missing = sorted(
        name for name, p in model.named_parameters() if p.numel() and name not in mapped
    )
    if missing:
        raise CheckpointError(f"{where}: no SevenNet weights for {missing}")
    return ours


def convert_sevennet_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Convert the SevenNet checkpoint ``source`` into an atomshard checkpoint ``target``.

    Returns:
        The path written (atomically).
    """
    from atomshard.models.checkpoint import save_checkpoint

    source = Path(source)
    data = read_sevennet_checkpoint(source)
    cfg, state = data["config"], _modern_keys(data["model_state_dict"])
    where = str(source)
    try:
        config = sevennet_config(cfg, state, where=where)
    except KeyError as exc:
        raise CheckpointError(f"{where}: config key {exc} is missing") from None
    model = NequIPPotential.from_config(config)
    model.load_state_dict(sevennet_state_dict(model, cfg, state, where=where))
    from ase.data import chemical_symbols

    metadata = {
        "source": str(source.resolve()),
        "source_format": "sevennet",
        "sevennet_model": source.parent.name,
        "sevennet_version": str(cfg.get("version", "unknown")),
        "cutoff": config.cutoff,
        "chemical_species": [chemical_symbols[z] for z in config.species],
        "converted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(target, model, model_type="potential", config=config, metadata=metadata)
    return target
