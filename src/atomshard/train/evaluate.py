"""Errors of a potential on a labelled dataset: MAE/RMSE tables and parity data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from atomshard.models.base import Potential
from atomshard.train.batch import collate, predict_batch
from atomshard.train.data import LabelledStructure
from atomshard.train.loss import error_sums, summarise


@dataclass
class Evaluation:
    """Predictions next to references, and their error summary.

    Shapes:
        energy_per_atom_ref, energy_per_atom_pred: ``[n_with_energy]`` eV/atom (the
            structures that have a reference energy)
        force_ref, force_pred: ``[n_force_components]`` eV/Å (structures with forces)
        stress_ref, stress_pred: ``[n_stress_components]`` eV/Å³ (periodic, with stress)
        errors: ``{energy,force,stress}_{mae,rmse}`` (NaN where absent)
    """

    energy_per_atom_ref: np.ndarray
    energy_per_atom_pred: np.ndarray
    force_ref: np.ndarray
    force_pred: np.ndarray
    stress_ref: np.ndarray
    stress_pred: np.ndarray
    errors: dict[str, float]


def evaluate_model(
    model: Potential, samples: Sequence[LabelledStructure], *, batch_size: int = 8
) -> Evaluation:
    """Predict every structure of ``samples`` (batched) and compare with its labels."""
    if not samples:
        raise ValueError("nothing to evaluate")
    model.eval()
    want_stress = any(s.stress is not None for s in samples)
    sums = torch.zeros(9, dtype=torch.float64)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("er", "ep", "fr", "fp", "sr", "sp")}
    for i in range(0, len(samples), batch_size):
        chunk = [s.with_edges(model.cutoff) for s in samples[i : i + batch_size]]
        batch = collate(chunk)
        pred = predict_batch(model, batch, forces=True, stress=want_stress)
        sums += error_sums(pred, batch)
        n = batch.n_atoms
        has_e = batch.energy_mask
        cols["er"].append((batch.energy / n)[has_e].numpy())
        cols["ep"].append((pred.energy.detach() / n)[has_e].numpy())
        assert pred.forces is not None
        cols["fr"].append(batch.forces[batch.force_mask].reshape(-1).numpy())
        cols["fp"].append(pred.forces.detach()[batch.force_mask].reshape(-1).numpy())
        if pred.stress is not None:
            cols["sr"].append(batch.stress[batch.stress_mask].reshape(-1).numpy())
            cols["sp"].append(pred.stress.detach()[batch.stress_mask].reshape(-1).numpy())
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    return Evaluation(
        energy_per_atom_ref=cat["er"],
        energy_per_atom_pred=cat["ep"],
        force_ref=cat["fr"],
        force_pred=cat["fp"],
        stress_ref=cat["sr"],
        stress_pred=cat["sp"],
        errors={k: v for k, v in summarise(sums).items() if not k.endswith("_mse")},
    )


def error_table(errors: dict[str, float], *, title: str = "") -> str:
    """A text table of MAE and RMSE (meV/atom, meV/Å, meV/Å³)."""
    rows = [
        ("energy", "meV/atom"),
        ("force", "meV/Å"),
        ("stress", "meV/Å³"),
    ]
    lines = [title] if title else []
    lines.append(f"{'quantity':<10} {'unit':<9} {'MAE':>12} {'RMSE':>12}")
    for name, unit in rows:
        mae, rmse = errors[f"{name}_mae"], errors[f"{name}_rmse"]
        if mae != mae:
            lines.append(f"{name:<10} {unit:<9} {'-':>12} {'-':>12}")
        else:
            lines.append(f"{name:<10} {unit:<9} {mae * 1000:12.4f} {rmse * 1000:12.4f}")
    return "\n".join(lines)
