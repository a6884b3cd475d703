"""One metrics path for every trainer: the per-epoch CSV and the learning-curve figure.

Both the potential trainer (:func:`atomshard.train.train_potential`) and the Hamiltonian
trainer (:mod:`atomshard.train.hamiltonian`, serial and distributed) keep their history
as a list of per-epoch rows (``dict`` of floats) inside ``last.pt``, and write it here:
``metrics.csv`` rewritten atomically after every epoch (so a killed run leaves a whole
file that matches its checkpoint), and ``learning_curve.png`` from the same rows. What
differs between the trainers is only which columns and panels they show
(:data:`POTENTIAL_PANELS`, :data:`HAMILTONIAN_PANELS`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atomshard.utils.files import atomic_write

__all__ = [
    "HAMILTONIAN_PANELS",
    "METRICS_FILE",
    "POTENTIAL_PANELS",
    "Curve",
    "Panel",
    "plot_learning_curves",
    "read_metrics",
    "write_metrics",
]

#: the per-epoch table every trainer writes in its output folder
METRICS_FILE = "metrics.csv"


def write_metrics(
    path: str | Path, history: Sequence[dict[str, float]], fields: Sequence[str]
) -> None:
    """The whole history as CSV (columns ``fields``; a row without a field leaves it
    empty), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in fields})
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a :func:`write_metrics` file (empty cells are NaN)."""
    with open(path, newline="") as fh:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


@dataclass(frozen=True)
class Curve:
    """One line of a panel: the rows' ``key`` times ``scale``, labelled ``label``."""

    key: str
    label: str
    scale: float = 1.0


@dataclass(frozen=True)
class Panel:
    """One axes of the learning-curve figure (log scale)."""

    title: str
    ylabel: str
    curves: tuple[Curve, ...]


POTENTIAL_PANELS = (
    Panel("loss", "loss", (Curve("train_loss", "train"), Curve("val_loss", "validation (EMA)"))),
    Panel(
        "validation errors",
        "validation RMSE",
        (
            Curve("val_force_rmse", "force, meV/Å", 1000.0),
            Curve("val_energy_rmse", "energy, meV/atom", 1000.0),
        ),
    ),
    Panel("learning rate", "learning rate", (Curve("lr", "lr"),)),
)

HAMILTONIAN_PANELS = (
    Panel(
        "block errors",
        "MAE (meV)",
        (
            Curve("train_mae", "train", 1000.0),
            Curve("val_mae", "validation (EMA)", 1000.0),
            Curve("val_mae_node", "validation, node blocks", 1000.0),
            Curve("val_mae_edge", "validation, edge blocks", 1000.0),
            Curve("val_band_mae", "validation, band energies", 1000.0),
        ),
    ),
    Panel("learning rate", "learning rate", (Curve("lr", "lr"),)),
)


def plot_learning_curves(
    history: Sequence[dict[str, float]],
    path: str | Path,
    panels: Sequence[Panel] = POTENTIAL_PANELS,
) -> None:
    """One panel per :class:`Panel` against the epoch (PNG, written atomically). Curves
    whose key no row has are left out; a dotted line marks where stage 2 starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for curve in panel.curves:
            values = [r.get(curve.key, math.nan) * curve.scale for r in history]
            if any(v == v and v > 0 for v in values):
                ax.semilogy(epochs, values, label=curve.label)
        ax.set(xlabel="epoch", ylabel=panel.ylabel, title=panel.title)
        if len(panel.curves) > 1:
            ax.legend(fontsize=8)
    for stage2 in [r["epoch"] for r in history if r.get("stage") == 2][:1]:
        for ax in axes[0]:
            ax.axvline(stage2 - 0.5, color="grey", ls=":", lw=1)
    fig.tight_layout()
    with atomic_write(path, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
