"""Fine-tuning a pretrained potential (a converted SevenNet-0, or any atomshard checkpoint).

Two steps before training:

1. **species subset**: keep only the elements of the fine-tuning data. The species
   embedding is an e3nn ``Linear`` from the one-hot ``n_species x 0e``, normalised by
   ``1/sqrt(n_species)``; its rows for the kept elements are copied and rescaled by
   ``sqrt(n_new / n_old)``, so the subset model gives *exactly* the same energies on
   those elements (tested). Models with the ``species`` self-connection (a tensor
   product with the one-hot) keep every element.
2. **new energy shifts**: the per-species shifts are corrected by a least-squares fit of
   the residuals ``E_ref - E_model`` on the training frames that have an energy
   (minimum norm when the compositions are linearly dependent; none: the model's shifts
   are kept, with a warning), so training starts without an energy offset.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from atomshard.errors import InputError
from atomshard.models.potential import NequIPConfig, NequIPPotential
from atomshard.models.potential.config import replace
from atomshard.train.batch import collate, predict_batch
from atomshard.train.data import LabelledStructure
from atomshard.train.statistics import energy_shift_note, fit_energy_shifts


def subset_species(
    model: NequIPPotential, species: Sequence[int]
) -> tuple[NequIPConfig, dict[str, torch.Tensor]]:
    """Config and weights of ``model`` restricted to ``species`` (atomic numbers).

    Returns:
        ``(config, state_dict)`` for :class:`NequIPPotential`.
    """
    cfg = model.config
    old = list(cfg.species)
    missing = [z for z in species if z not in old]
    if missing:
        from ase.data import chemical_symbols

        raise InputError(
            "the pretrained model does not know " + ", ".join(chemical_symbols[z] for z in missing)
        )
    if cfg.self_connection == "species":
        return cfg, {k: v.detach().clone() for k, v in model.state_dict().items()}
    keep = [old.index(int(z)) for z in species]
    rows = torch.tensor(keep, dtype=torch.int64)
    shifts = [cfg.energy_shift[i] for i in keep]  # type: ignore[index]
    scales = [cfg.energy_scale[i] for i in keep]  # type: ignore[index]
    new_cfg = replace(
        cfg, species=tuple(int(z) for z in species), energy_shift=tuple(shifts),
        energy_scale=tuple(scales),
    )  # fmt: skip
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weight = state["embedding.weight"]
    factor = math.sqrt(len(keep) / len(old))
    blocks, offset = [], 0
    for ins in model.embedding.instructions:
        n_in, n_out = ins.path_shape
        block = weight[offset : offset + n_in * n_out].view(n_in, n_out)
        blocks.append((block.index_select(0, rows) * factor).reshape(-1))
        offset += n_in * n_out
    state["embedding.weight"] = torch.cat(blocks)
    return new_cfg, state


@torch.no_grad()
def _predicted_energies(
    model: NequIPPotential, samples: Sequence[LabelledStructure], batch_size: int = 8
) -> np.ndarray:
    out = []
    for i in range(0, len(samples), batch_size):
        batch = collate([s.with_edges(model.cutoff) for s in samples[i : i + batch_size]])
        with torch.enable_grad():
            pred = predict_batch(model, batch, forces=False)
        out.append(pred.energy.detach().cpu().numpy())
    return np.concatenate(out)


def refit_energy_shifts(
    config: NequIPConfig,
    state: dict[str, torch.Tensor],
    samples: Sequence[LabelledStructure],
) -> tuple[NequIPConfig, dict[str, torch.Tensor], np.ndarray]:
    """``config`` with shifts corrected on ``samples``, the weights cast to its dtypes,
    and the correction.

    Shapes:
        returns[2]: ``[n_species]`` eV, added to the old shifts
    """
    model = NequIPPotential.from_config(config)
    model.load_state_dict(state)
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    note = energy_shift_note(samples, fallback="the model's own are kept")
    if note is not None:
        warnings.warn(note, stacklevel=2)
    reference = np.array([s.energy if s.energy is not None else np.nan for s in samples])
    residual = reference - _predicted_energies(model, samples)  # NaN rows are not read
    delta = fit_energy_shifts(samples, config.species, residual=residual)
    shifts = tuple(float(a + b) for a, b in zip(config.energy_shift, delta))  # type: ignore[arg-type]
    return replace(config, energy_shift=shifts), state, delta


def prepare_finetune(
    model: NequIPPotential,
    samples: Sequence[LabelledStructure],
    species: Sequence[int],
    *,
    dtype: str,
) -> tuple[NequIPConfig, dict[str, torch.Tensor], np.ndarray]:
    """Subset ``model`` to ``species``, set its body dtype and refit its energy shifts.

    Returns:
        ``(config, state_dict, shift_correction)``.
    """
    cfg, state = subset_species(model, species)
    if cfg.dtype != dtype:
        cfg = replace(cfg, dtype=dtype)  # load_state_dict casts the weights
    cfg, state, delta = refit_energy_shifts(cfg, state, samples)
    return cfg, state, delta
