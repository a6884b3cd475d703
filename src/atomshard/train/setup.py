"""From a training YAML (a dict) to a finished run: data, statistics, model, ranks, plots.

``model`` holds ``kind: potential`` and either :class:`NequIPConfig` fields (``species``
defaults to the elements of the data; ``preset`` picks a size preset first) or
``init: sevennet-0 | CHECKPOINT`` to fine-tune (the other keys are then not allowed);
or ``kind: allegro`` and :class:`~atomshard.models.allegro.AllegroConfig` fields (presets
``allegro-small``, ``allegro-medium``, ``allegro-large``).
For a fresh model the training-set statistics set ``energy_shift`` (least squares),
``energy_scale`` (per-species force RMS) and ``avg_num_neighbors`` unless the YAML gives
them. With ``training.ranks > 1`` the run is launched on that many local gloo ranks;
under ``torchrun``/``srun`` the world comes from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomshard.errors import InputError
from atomshard.models.allegro import AllegroConfig
from atomshard.models.potential import NequIPConfig
from atomshard.train.config import DataConfig, RecipeConfig
from atomshard.train.data import (
    LabelledStructure,
    dataset_species,
    read_dataset,
    read_split_file,
    split_indices,
)
from atomshard.utils.config import config_from_dict, config_to_dict

TOP_KEYS = ("model", "data", "training", "output")
STAT_FIELDS = ("energy_shift", "energy_scale", "avg_num_neighbors")


@dataclass
class Prepared:
    """Everything a rank needs to train (plain, picklable values)."""

    config: NequIPConfig | AllegroConfig
    train_set: list[LabelledStructure]
    valid_set: list[LabelledStructure]
    test_set: list[LabelledStructure]
    recipe: RecipeConfig
    output: Path
    metadata: dict[str, Any]
    init_state: dict[str, Any] | None


def load_splits(
    data: DataConfig,
) -> tuple[list[LabelledStructure], list[LabelledStructure], list[LabelledStructure]]:
    """Read ``data.train`` (and ``data.valid``) and split them into train/valid/test."""
    kw: dict[str, Any] = dict(
        format=data.format, length_unit=data.length_unit, energy_unit=data.energy_unit
    )
    frames = read_dataset(data.train, **kw)
    if data.split_file is not None:
        parts = read_split_file(data.split_file, len(frames))
    elif data.valid is not None:
        parts = split_indices(len(frames), valid_fraction=0.0, test_fraction=data.test_fraction,
                              seed=data.split_seed)  # fmt: skip
    else:
        parts = split_indices(len(frames), valid_fraction=data.valid_fraction,
                              test_fraction=data.test_fraction, seed=data.split_seed)  # fmt: skip
    train = [frames[i] for i in parts["train"]]
    valid = [frames[i] for i in parts["valid"]]
    test = [frames[i] for i in parts["test"]]
    if data.valid is not None:
        valid = read_dataset(data.valid, **kw)
    return train, valid, test


def prepare(spec: dict[str, Any], *, where: str, output: str | None = None) -> Prepared:
    """Validate a training spec, read the data and build the model config."""
    import torch

    from atomshard.train.statistics import compute_statistics

    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown top-level key(s) {unknown}; known: {list(TOP_KEYS)}")
    model_spec = dict(spec.get("model") or {})
    kind = model_spec.pop("kind", "potential")
    config_class: type[NequIPConfig] | type[AllegroConfig] = NequIPConfig
    if kind == "allegro":
        config_class = AllegroConfig
        if "init" in model_spec:
            raise InputError(f"{where}: model.init (fine-tuning) is for kind: potential only")
    data = config_from_dict(DataConfig, spec.get("data") or {}, where=f"{where}: data")
    recipe = config_from_dict(RecipeConfig, spec.get("training") or {}, where=f"{where}: training")
    out = output or spec.get("output")
    if not out:
        raise InputError(f"{where}: give 'output' (a folder) or --output")
    train, valid, test = load_splits(data)
    species = dataset_species(train + valid + test)
    metadata: dict[str, Any] = {
        "data": config_to_dict(data),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": len(test),
    }
    init_state = None
    config: NequIPConfig | AllegroConfig
    if "init" in model_spec:
        from atomshard.models.potential import NequIPPotential
        from atomshard.models.resolve import resolve_model
        from atomshard.train.finetune import prepare_finetune

        extra = sorted(set(model_spec) - {"init"})
        if extra:
            raise InputError(f"{where}: model.init (fine-tuning) takes no other keys, got {extra}")
        source = resolve_model(str(model_spec["init"]), dtype=torch.float64)
        if not isinstance(source, NequIPPotential):
            raise InputError(f"{where}: model.init must be a NequIP/SevenNet-class potential")
        cutoff = source.config.cutoff
        train = [s.with_edges(cutoff) for s in train]
        config, init_state, delta = prepare_finetune(
            source, train, species, dtype=recipe.body_dtype
        )
        metadata["finetune"] = {
            "init": str(model_spec["init"]),
            "species": list(species),
            "energy_shift_correction": [float(d) for d in delta],
        }
    else:
        preset_name = model_spec.pop("preset", None)
        base: dict[str, Any] = {}
        if preset_name is not None:
            if kind == "allegro":
                from atomshard.models.allegro import PRESETS
            else:
                from atomshard.models.potential.config import PRESETS

            if preset_name not in PRESETS:
                raise InputError(f"{where}: model.preset {preset_name!r}; known {sorted(PRESETS)}")
            base.update(PRESETS[preset_name])
        base.update(model_spec)
        base.setdefault("species", list(species))
        base.setdefault("dtype", recipe.body_dtype)
        given = {k: base[k] for k in STAT_FIELDS if k in base}
        probe = config_from_dict(config_class, base, where=f"{where}: model")
        train = [s.with_edges(probe.cutoff) for s in train]
        stats = compute_statistics(train, probe.species)
        metadata["statistics"] = stats.to_dict()
        fitted = {
            "energy_shift": list(stats.energy_shift),
            "energy_scale": list(stats.force_rms),
            "avg_num_neighbors": stats.avg_num_neighbors,
        }
        base.update({k: v for k, v in fitted.items() if k not in given})
        config = config_from_dict(config_class, base, where=f"{where}: model")
    if config.dtype != recipe.body_dtype:
        raise InputError(
            f"{where}: model.dtype={config.dtype!r} contradicts training.precision="
            f"{recipe.precision!r} (body {recipe.body_dtype})"
        )
    return Prepared(config, train, valid, test, recipe, Path(out), metadata, init_state)


def _rank_main(comm: Any, prepared: Prepared, resume: bool) -> dict[str, Any]:
    """What each rank runs (module level so local ranks can import it)."""
    import torch

    from atomshard.train.trainer import train_potential

    if prepared.recipe.threads:
        torch.set_num_threads(prepared.recipe.threads)
    result = train_potential(
        prepared.config, prepared.train_set, prepared.valid_set, prepared.recipe,
        prepared.output, comm=comm, resume=resume, metadata=prepared.metadata,
        init_state=prepared.init_state,
    )  # fmt: skip
    comm.barrier(what="training finished")
    return {
        "epochs": result.epochs_run, "best": result.best_metric, "reason": result.stop_reason,
        "interrupted": result.interrupted,
    }  # fmt: skip


def run_training(prepared: Prepared, *, resume: bool = True) -> dict[str, Any] | None:
    """Train on ``prepared.recipe.ranks`` local ranks (or the torchrun world), then plot.

    Returns rank 0's summary; None on the other ranks of a torchrun/srun job.
    """
    from atomshard.comm import env_world, run_on_ranks

    recipe = prepared.recipe
    # under torchrun/srun the world is the job's: training.ranks is not used
    n_ranks = 1 if env_world() is not None else recipe.ranks
    from atomshard.utils.signals import StopOnSigterm, forward_to_children

    # SIGTERM to this launcher reaches the spawned ranks, which stop after the same step
    with StopOnSigterm(forward=forward_to_children if n_ranks > 1 else None):
        summary = run_on_ranks(
            _rank_main, n_ranks, prepared, resume,
            timeout_s=600.0, threads_per_rank=recipe.threads or None,
        )  # fmt: skip
    if summary is None:
        return None
    if recipe.plots and not summary["interrupted"]:
        from atomshard.train.report import final_report

        summary["report"] = final_report(prepared)
    return summary
