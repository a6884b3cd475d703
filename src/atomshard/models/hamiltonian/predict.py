"""Prediction outputs: block files, CSR matrices, per-block error tables and figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from ase.data import chemical_symbols

from atomshard.hamiltonian.assembly import BlochAssembler, generalized_eigenvalues
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.files import write_block_file
from atomshard.models.hamiltonian.committee import HamiltonianCommittee
from atomshard.models.hamiltonian.data import Sample
from atomshard.models.hamiltonian.model import HamiltonianModel, HamiltonianPrediction

#: what predicts blocks: one model or a committee of them
Predictor = HamiltonianModel | HamiltonianCommittee

__all__ = [
    "error_table",
    "plot_errors",
    "plot_magnitude_vs_distance",
    "predict_sample",
    "write_csr",
    "write_prediction",
]


def predict_sample(model: Predictor, sample: Sample) -> HamiltonianPrediction:
    with torch.no_grad():
        return model(sample.graph)


def write_prediction(
    path: Path, model: Predictor, sample: Sample, pred: HamiltonianPrediction
) -> BlockSet:
    """Write the predicted H (and the source's S if any) as a DeepH-style block file."""
    blocks = pred.to_blockset(sample.graph)
    mats = {"H": blocks}
    if "S" in sample.source.matrices:
        mats["S"] = sample.source.matrices["S"]
    src = sample.source
    write_block_file(
        path, basis=model.basis, positions=src.positions, cell=src.cell, pbc=src.pbc, matrices=mats
    )
    return blocks


def write_csr(path: Path, blocks: BlockSet, model: Predictor) -> None:
    """Γ-point ``H = sum_R H(R)`` (the molecule's H) as CSR arrays in an ``.npz``.

    Keys: ``data``, ``indices``, ``indptr``, ``shape`` (scipy CSR), ``species``,
    ``orbital_offsets`` (first orbital of each atom), ``units`` (``"eV"``).
    """
    h = BlochAssembler(blocks, model.basis).at([0.0, 0.0, 0.0], real=True)
    assert isinstance(h, scipy.sparse.csr_matrix)
    np.savez_compressed(
        path,
        data=h.data,
        indices=h.indices,
        indptr=h.indptr,
        shape=np.array(h.shape),
        species=blocks.species,
        orbital_offsets=model.basis.offsets(blocks.species),
        units="eV",
    )


def error_table(pred: HamiltonianPrediction, sample: Sample) -> list[dict[str, object]]:
    """Per kind and element pair: blocks, elements, MAE / RMSE / max |error| in meV."""
    rows: list[dict[str, object]] = []
    for kind in ("node", "edge"):
        got, want = getattr(pred, kind), getattr(sample, kind)
        for (a, b), (_, target) in sorted(want.items()):
            d = (got[(a, b)][1].detach().cpu() - target).abs().numpy()
            rows.append(
                {
                    "kind": kind,
                    "pair": f"{chemical_symbols[a]}-{chemical_symbols[b]}",
                    "blocks": int(d.shape[0]),
                    "elements": int(d.size),
                    "mae_meV": 1000 * float(d.mean()),
                    "rmse_meV": 1000 * float(np.sqrt((d**2).mean())),
                    "max_meV": 1000 * float(d.max()),
                }
            )
    return rows


def write_table(path: Path, rows: list[dict[str, object]]) -> str:
    """Write rows as CSV and return them as aligned text."""
    if not rows:
        return "(no blocks)"
    keys = list(rows[0])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    fmt = [
        f"{r['kind']:5s} {r['pair']:6s} {r['blocks']:7d} {r['elements']:9d} "
        f"{r['mae_meV']:10.3f} {r['rmse_meV']:10.3f} {r['max_meV']:10.3f}"
        for r in rows
    ]
    head = (
        f"{'kind':5s} {'pair':6s} {'blocks':>7s} {'elements':>9s} {'MAE meV':>10s} "
        f"{'RMSE meV':>10s} {'max meV':>10s}"
    )
    return "\n".join([head, *fmt])


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_magnitude_vs_distance(path: Path, pred: HamiltonianPrediction, sample: Sample) -> None:
    """max |H_ij| per edge block vs distance, predicted and reference (seed Fig. 8)."""
    plt = _plt()
    dist = sample.graph.edge_vectors().norm(dim=1).numpy()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, source, marker in (("reference", sample.edge, "o"), ("predicted", pred.edge, "x")):
        r, m = [], []
        for idx, blocks in source.values():
            r.append(dist[idx.numpy()])
            m.append(blocks.detach().abs().amax(dim=(1, 2)).numpy())
        if r:
            ax.scatter(
                np.concatenate(r),
                np.maximum(np.concatenate(m), 1e-8),
                s=4,
                marker=marker,
                label=label,
                alpha=0.6,
            )
    ax.set_yscale("log")
    ax.set_xlabel("distance (Å)")
    ax.set_ylabel("max |H_ij| (eV)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors(path: Path, pred: HamiltonianPrediction, sample: Sample) -> None:
    """Violins of |error| (meV) for diagonal (node) and off-diagonal (edge) blocks."""
    plt = _plt()
    data, labels = [], []
    for kind in ("node", "edge"):
        errs = [
            (getattr(pred, kind)[k][1].detach().cpu() - t).abs().flatten().numpy() * 1000
            for k, (_, t) in getattr(sample, kind).items()
        ]
        if errs:
            data.append(np.log10(np.maximum(np.concatenate(errs), 1e-6)))
            labels.append("diagonal" if kind == "node" else "off-diagonal")
    fig, ax = plt.subplots(figsize=(4, 3.5))
    if data:
        ax.violinplot(data, showmedians=True)
        ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel("log10 |error| (meV)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gamma_eigenvalues(blocks: BlockSet, sample: Sample, model: Predictor) -> np.ndarray | None:
    """Γ eigenvalues of (blocks, reference S), or None without S (eV)."""
    s = sample.source.matrices.get("S")
    if s is None:
        return None
    h = BlochAssembler(blocks, model.basis).at([0, 0, 0])
    return generalized_eigenvalues(h, BlochAssembler(s, model.basis).at([0, 0, 0]))
