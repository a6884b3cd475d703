"""Loss and error metrics whose sums add up exactly over ranks.

Each term is a *sum* of squared errors divided by a *global* count (systems with an
energy, force components, stress components of the whole global batch), so the losses of the ranks'
shards add up to the loss of the global batch and their gradients add up to its
gradient: data parallelism changes the order of additions, not the objective. A term
counts only the frames that have its label; a term no frame of the global batch has is
left out (no division by zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from atomshard.train.batch import Batch, BatchPrediction
from atomshard.train.data import LabelledStructure

#: Order of the entries of an error-sum vector (see :func:`error_sums`).
SUM_FIELDS = (
    "n_energy", "energy_abs", "energy_sq",
    "n_force", "force_abs", "force_sq",
    "n_stress", "stress_abs", "stress_sq",
)  # fmt: skip


@dataclass(frozen=True)
class LossWeights:
    """Weights of the per-atom-energy, force and stress MSE terms."""

    energy: float
    force: float
    stress: float


@dataclass(frozen=True)
class Counts:
    """Normalisers of one global batch: systems, systems with a reference energy, force
    components, stress components."""

    n_systems: int
    n_energy: int
    n_force: int
    n_stress: int

    @classmethod
    def of(cls, samples: Sequence[LabelledStructure]) -> Counts:
        import numpy as np

        n_force = sum(3 * s.n_atoms for s in samples if s.forces is not None)
        n_stress = sum(
            9
            for s in samples
            if s.stress is not None
            and bool(np.all(s.structure.pbc))
            and abs(float(np.linalg.det(s.structure.cell))) > 0
        )
        n_energy = sum(1 for s in samples if s.energy is not None)
        return cls(n_systems=len(samples), n_energy=n_energy, n_force=n_force, n_stress=n_stress)


def _residuals(
    pred: BatchPrediction, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    de = ((pred.energy - batch.energy) / batch.n_atoms)[batch.energy_mask]
    df = None
    if pred.forces is not None:
        df = (pred.forces - batch.forces)[batch.force_mask]
    ds = None
    if pred.stress is not None:
        ds = (pred.stress - batch.stress)[batch.stress_mask]
    return de, df, ds


def batch_loss(
    pred: BatchPrediction, batch: Batch, counts: Counts, weights: LossWeights
) -> torch.Tensor:
    """This shard's share of the global-batch loss (a scalar with gradient).

    ``w_E Σ(ΔE/N)² / n_energy + w_F Σ ΔF² / n_force + w_S Σ Δσ² / n_stress``, sums over
    this shard's frames that have the label, counts over the global batch. The energy
    term stays in the graph when no frame has an energy (an empty sum, exact zeros), so
    every rank's backward reaches the same parameters.
    """
    de, df, ds = _residuals(pred, batch)
    loss = weights.energy * (de**2).sum() / max(counts.n_energy, 1)
    if df is not None and weights.force > 0 and counts.n_force > 0:
        loss = loss + weights.force * (df**2).sum() / counts.n_force
    if ds is not None and weights.stress > 0 and counts.n_stress > 0:
        loss = loss + weights.stress * (ds**2).sum() / counts.n_stress
    return loss


@torch.no_grad()
def error_sums(pred: BatchPrediction, batch: Batch) -> torch.Tensor:
    """``[9]`` float64 counts and sums of absolute and squared errors (:data:`SUM_FIELDS`).

    Energies are per atom (eV/atom), forces per component (eV/Å), stress per component
    (eV/Å³). Add the vectors of several batches or ranks, then :func:`summarise`.
    """
    de, df, ds = _residuals(pred, batch)
    out = torch.zeros(9, dtype=torch.float64)
    for k, d in enumerate((de, df, ds)):
        if d is None:
            continue
        d = d.detach().to(torch.float64).reshape(-1).cpu()
        out[3 * k] = d.numel()
        out[3 * k + 1] = d.abs().sum()
        out[3 * k + 2] = (d**2).sum()
    return out


def summarise(sums: torch.Tensor, weights: LossWeights | None = None) -> dict[str, float]:
    """MAE/RMSE per quantity (NaN where absent) and, with ``weights``, the weighted loss."""
    out: dict[str, float] = {}
    for k, name in enumerate(("energy", "force", "stress")):
        n = float(sums[3 * k])
        out[f"{name}_mae"] = float(sums[3 * k + 1]) / n if n else float("nan")
        out[f"{name}_rmse"] = (float(sums[3 * k + 2]) / n) ** 0.5 if n else float("nan")
        out[f"{name}_mse"] = float(sums[3 * k + 2]) / n if n else float("nan")
    if weights is not None:
        loss = 0.0
        for name, w in (("energy", weights.energy), ("force", weights.force),
                        ("stress", weights.stress)):  # fmt: skip
            mse = out[f"{name}_mse"]
            if w > 0 and mse == mse:
                loss += w * mse
        out["loss"] = loss
    return out
