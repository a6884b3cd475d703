"""End-of-training figures: learning curves (the trainers' one plotter,
:mod:`atomshard.train.metrics`) and parity plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomshard.models.base import Potential
from atomshard.train.evaluate import Evaluation, error_table, evaluate_model
from atomshard.train.metrics import POTENTIAL_PANELS, plot_learning_curves
from atomshard.utils.files import atomic_write

if TYPE_CHECKING:
    from atomshard.train.setup import Prepared


def plot_parity(ev: Evaluation, path: Path | str, *, title: str = "") -> None:
    """Predicted vs reference per-atom energies and force components (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("energy per atom (eV)", ev.energy_per_atom_ref, ev.energy_per_atom_pred, "energy"),
        ("force component (eV/Å)", ev.force_ref, ev.force_pred, "force"),
    ]
    units = {"energy": "meV/atom", "force": "meV/Å", "stress": "meV/Å³"}
    if ev.stress_ref.size:
        panels.append(("stress component (eV/Å³)", ev.stress_ref, ev.stress_pred, "stress"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4))
    for ax, (label, ref, pred, key) in zip(axes, panels):
        ax.scatter(ref, pred, s=4, alpha=0.6)
        if ref.size:
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}")
        ax.ticklabel_format(useOffset=False)
        rmse = ev.errors[f"{key}_rmse"]
        text = f"RMSE {rmse * 1000:.2f} {units[key]}" if rmse == rmse else "no reference values"
        ax.set_title(text, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def final_report(prepared: Prepared) -> dict[str, Any]:
    """Curves from ``last.pt``'s history, parity and error tables of ``best.pt`` (rank 0)."""
    from atomshard.models.checkpoint import load_model, read_checkpoint

    out = prepared.output
    history = read_checkpoint(out / "last.pt")["training"]["state"]["history"]
    plot_learning_curves(history, out / "learning_curve.png", POTENTIAL_PANELS)
    model = load_model(out / "best.pt")
    assert isinstance(model, Potential)
    summary: dict[str, Any] = {}
    for name, samples in (("valid", prepared.valid_set or prepared.train_set),
                          ("test", prepared.test_set)):  # fmt: skip
        if not samples:
            continue
        ev = evaluate_model(model, samples, batch_size=prepared.recipe.batch_size)
        plot_parity(ev, out / f"parity_{name}.png", title=f"best.pt on the {name} set")
        print(error_table(ev.errors, title=f"best.pt on the {name} set ({len(samples)} frames)"))
        # an error over no frames (no energies, no stress) is left out, not NaN
        summary[name] = {k: v for k, v in ev.errors.items() if v == v}
    with atomic_write(out / "errors.json") as fh:
        json.dump(summary, fh, indent=1)
    return summary
