"""Graph-parallel Hamiltonian prediction: the ``atomshard predict --ranks N`` path (also
under torchrun/srun, and with ``--repeat`` / ``--eigs`` on one rank).

Per structure: rank 0 tiles it (``--repeat``), builds the graph, the partition and every
rank's part and scatters them; every rank predicts its owned blocks
(:func:`atomshard.runtime.hamiltonian.predict_part`) and writes them to a part file; rank
0 merges the parts by streaming (:mod:`atomshard.hamiltonian.parts`) into
``NAME.pred.h5`` and/or ``NAME.pred.npz`` and removes them. Part files live in
``OUT/.NAME.parts/``, so under torchrun on several machines ``OUT`` must be shared.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.comm import (
    DEFAULT_TIMEOUT_S,
    Communicator,
    ExchangeProfiler,
    HaloExchange,
    root_scatter,
    run_on_ranks,
)
from atomshard.errors import InputError
from atomshard.graph import Structure
from atomshard.hamiltonian.assembly import BlochAssembler, eigenvalues_near
from atomshard.hamiltonian.files import BlockFile, tile_block_file
from atomshard.hamiltonian.parts import (
    DEFAULT_SLAB,
    merge_block_parts,
    merge_csr_parts,
    read_csr,
    write_part,
)
from atomshard.models.hamiltonian.committee import HamiltonianCommittee, load_predictor
from atomshard.models.hamiltonian.data import make_sample
from atomshard.models.hamiltonian.model import HamiltonianModel
from atomshard.runtime import PartitionSpec
from atomshard.runtime.hamiltonian import (
    HamiltonianPart,
    owned_blocks,
    owned_errors,
    predict_part,
    split_hamiltonian,
)

__all__ = ["PredictOptions", "predict_distributed", "predict_rank"]


@dataclass(frozen=True)
class PredictOptions:
    """What to write and how to split.

    Attributes:
        formats: ``"h5"`` (DeepH-style blocks) and/or ``"npz"`` (Γ-point CSR)
        repeat: tile every structure ``a x b x c`` before predicting (``(1, 1, 1)``: as is)
        n_eigs, sigma: eigenvalues nearest ``sigma`` (eV) by shift-invert (0: none)
        slab: blocks (h5) or atoms (CSR) copied per step of the merge
        edge_chunk: the model's edges in chunks of this many (0: all at once)
    """

    formats: tuple[str, ...] = ("h5",)
    partition: PartitionSpec = "lownn"
    transport: str = "auto"
    repeat: tuple[int, int, int] = (1, 1, 1)
    n_eigs: int = 0
    sigma: float = 0.0
    profile: bool = False
    slab: int = DEFAULT_SLAB
    edge_chunk: int = 0


Predictor = HamiltonianModel | HamiltonianCommittee
ModelSource = str | Sequence[str] | HamiltonianModel | HamiltonianCommittee


def _load(model: ModelSource, device: torch.device) -> Predictor:
    """One model, or a committee when ``model`` is several checkpoint paths."""
    if not isinstance(model, HamiltonianModel | HamiltonianCommittee):
        model = load_predictor([model] if isinstance(model, str) else list(model))
    return model.to(device).eval()


def _errors_mev(errors: dict[str, float]) -> dict[str, float]:
    out = {f"{k}_meV": 1000 * v for k, v in errors.items() if k.startswith("mae")}
    return out | {"n_elements": errors["n_elements"]}


def _split_input(
    model: Predictor, source: BlockFile | None, options: PredictOptions, n_ranks: int
) -> list[tuple[dict[str, Any] | None, HamiltonianPart]]:
    """Rank 0: tile, check and split ``source``; ``(header, part)`` per rank (header on
    rank 0 only)."""
    assert source is not None
    tiled = tile_block_file(source, options.repeat)
    model.check_species(torch.as_tensor(tiled.species))
    n_orb = int(model.basis.offsets(tiled.species)[-1])
    if options.n_eigs and not 0 < options.n_eigs < n_orb - 1:
        raise InputError(
            f"--eigs {options.n_eigs}: must be in 1..{n_orb - 2} for the "
            f"{n_orb} orbitals of {len(tiled.species)} atoms"
        )
    st = Structure(positions=tiled.positions, species=tiled.species, cell=tiled.cell, pbc=tiled.pbc)
    sample = None
    if "H" in tiled.matrices:
        sample = make_sample("input", tiled, model.basis, model.cutoff)
    t0 = time.perf_counter()
    parts = split_hamiltonian(st, model.cutoff, n_ranks, options.partition, sample=sample)
    header = {
        "tiled": tiled,
        "has_reference": sample is not None,
        "split_s": time.perf_counter() - t0,
    }
    return [(header if r == 0 else None, p) for r, p in enumerate(parts)]


def predict_rank(
    comm: Communicator,
    model: ModelSource,
    out: str,
    options: PredictOptions,
    *,
    inputs: list[tuple[str, BlockFile]] | None,
) -> list[dict[str, Any]] | None:
    """One rank of a distributed prediction of every input (rank 0 holds ``inputs``).

    Returns per-structure summaries on rank 0 (paths, sizes, timings, errors when the
    input holds a reference H, eigenvalues when asked), None elsewhere.
    """
    net = _load(model, comm.device)
    if options.edge_chunk:
        net.set_memory(edge_chunk=options.edge_chunk)
    names = comm.broadcast_object([n for n, _ in inputs] if inputs is not None else None)
    folder = Path(out)
    results = []
    for i, name in enumerate(names):
        source = inputs[i][1] if inputs is not None else None
        header, part = root_scatter(comm, _split_input, net, source, options, comm.world_size)
        profiler = ExchangeProfiler() if options.profile else None
        ex = HaloExchange(part.plan, comm, transport=options.transport, profiler=profiler)
        graph = part.graph(comm.device)
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.start_step()
        with torch.no_grad():
            pred = predict_part(net, part, ex, graph=graph)
        if profiler is not None:
            profiler.end_step()
        t_predict = time.perf_counter() - t0
        errors = (
            _errors_mev(owned_errors(comm, pred, part))
            if comm.broadcast_object(bool(header and header["has_reference"]))
            else None
        )
        parts_dir = folder / f".{name}.parts"
        if comm.rank == 0:
            parts_dir.mkdir(parents=True, exist_ok=True)
        comm.barrier(what="part folder")
        species = comm.broadcast_object(header["tiled"].species if comm.rank == 0 else None)
        t1 = time.perf_counter()
        pairs, blocks = owned_blocks(pred, part)
        n_blocks = write_part(
            parts_dir / f"rank{comm.rank}.h5",
            pairs,
            blocks,
            part.plan.owned_global,
            net.basis,
            np.asarray(species),
        )
        t_write = time.perf_counter() - t1
        summary = {
            "rank": comm.rank,
            "atoms": part.plan.n_owned,
            "halo": part.plan.n_halo,
            "edges": part.n_owned_edges,
            "reverse_edges": int(graph.n_edges - part.n_owned_edges),
            "blocks": n_blocks,
            "predict_s": t_predict,
            "write_s": t_write,
        }
        if profiler is not None:
            summary.update(profiler.summary())
        per_rank = comm.gather_objects(summary) if comm.world_size > 1 else [summary]
        comm.barrier(what="part files written")
        if comm.rank == 0:
            assert header is not None and per_rank is not None
            results.append(
                _merge(folder, name, parts_dir, comm.world_size, net, header, options)
                | {"ranks": per_rank, "errors": errors}
            )
        comm.barrier(what="merge")
    return results if comm.rank == 0 else None


def _merge(
    folder: Path,
    name: str,
    parts_dir: Path,
    n_ranks: int,
    net: Predictor,
    header: dict[str, Any],
    options: PredictOptions,
) -> dict[str, Any]:
    tiled: BlockFile = header["tiled"]
    parts = [parts_dir / f"rank{r}.h5" for r in range(n_ranks)]
    t0 = time.perf_counter()
    out: dict[str, Any] = {"name": name, "n_atoms": len(tiled.species)}
    out["split_s"] = header["split_s"]
    if "h5" in options.formats:
        extra = {"S": tiled.matrices["S"]} if "S" in tiled.matrices else None
        path = folder / f"{name}.pred.h5"
        out["blocks"] = merge_block_parts(
            path,
            parts,
            basis=net.basis,
            species=tiled.species,
            positions=tiled.positions,
            cell=tiled.cell,
            pbc=tiled.pbc,
            extra=extra,
            slab=options.slab,
        )
        out["h5"] = str(path)
    csr_path = folder / f"{name}.pred.npz"
    if "npz" in options.formats or options.n_eigs:
        out["orbitals"], out["nnz"] = merge_csr_parts(
            csr_path, parts, basis=net.basis, species=tiled.species, slab=options.slab
        )
        out["npz"] = str(csr_path)
    out["merge_s"] = time.perf_counter() - t0
    shutil.rmtree(parts_dir, ignore_errors=True)
    if options.n_eigs:
        h = read_csr(csr_path)
        s = None
        if "S" in tiled.matrices:
            s = BlochAssembler(tiled.matrices["S"], net.basis).at([0.0, 0.0, 0.0], real=True)
        t1 = time.perf_counter()
        vals = eigenvalues_near(h, options.sigma, options.n_eigs, s=s)
        out["eigs_s"] = time.perf_counter() - t1
        eig_path = folder / f"{name}.eigs_near.txt"
        np.savetxt(
            eig_path,
            vals,
            header=f"Γ eigenvalues (eV) nearest sigma = {options.sigma} eV, shift-invert"
            + (", generalized with S" if s is not None else ", S = 1 (no overlap given)"),
        )
        out["eigenvalues"] = vals.tolist()
        if "npz" not in options.formats:
            csr_path.unlink()
            out.pop("npz")
    return out


def predict_distributed(
    model: ModelSource,
    inputs: list[tuple[str, BlockFile]],
    out: str | Path,
    options: PredictOptions,
    *,
    n_ranks: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads_per_rank: int | None = None,
) -> list[dict[str, Any]] | None:
    """Predict ``inputs`` on ``n_ranks`` local ranks, or on the torchrun/srun group.

    ``model``: a checkpoint path, several (a committee: the mean of their blocks) or a
    model. Under torchrun every process calls this with ``n_ranks=1``; only rank 0 needs
    (and reads) ``inputs``. Returns the summaries on rank 0, None on the other ranks.
    """
    Path(out).mkdir(parents=True, exist_ok=True)
    return run_on_ranks(  # type: ignore[no-any-return]
        predict_rank,
        n_ranks,
        model,
        str(out),
        options,
        timeout_s=timeout_s,
        threads_per_rank=threads_per_rank,
        root_only={"inputs": inputs},
    )
