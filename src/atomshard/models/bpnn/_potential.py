"""BPNNPotential: an n2p2 high-dimensional neural-network potential as a torch Potential."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.io.n2p2 import N2P2Potential, read_n2p2_potential
from atomshard.models.base import Exchange, Potential, Properties
from atomshard.models.bpnn._backward import block_features_backward
from atomshard.models.bpnn._functions import activation
from atomshard.models.bpnn._native import (
    NativePlan,
    load_kernel,
    native_backward,
    native_cells,
    native_forward,
    supports,
)
from atomshard.models.bpnn._symmetry import SymmetryPlan, block_features

#: Ways to get the gradient of the symmetry functions (see :class:`BPNNPotential`).
BACKWARD_MODES = ("explicit", "recompute", "store")
#: Implementations of the symmetry functions (see :class:`BPNNPotential`).
KERNELS = ("auto", "native", "torch")


class _RecomputedFeatures(torch.autograd.Function):
    """Features of one block; backward recomputes the block with autograd (nothing stored
    but the block's edge vectors)."""

    @staticmethod
    def forward(
        ctx: Any, vec: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        ctx.fn = fn
        ctx.save_for_backward(vec)
        with torch.no_grad():
            return fn(vec)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (vec,) = ctx.saved_tensors
        with torch.enable_grad():
            v = vec.detach().requires_grad_(True)
            out = ctx.fn(v)
            if not out.requires_grad:  # no neighbours within any cutoff in this block
                return torch.zeros_like(vec), None
            (g,) = torch.autograd.grad(out, v, grad)
        return g, None


class _ExplicitFeatures(torch.autograd.Function):
    """Features of one block; backward is the hand-written chain rule of ``_backward``."""

    @staticmethod
    def forward(
        ctx: Any,
        vec: torch.Tensor,
        fn: Callable[[torch.Tensor], torch.Tensor],
        bwd: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        ctx.bwd = bwd
        ctx.save_for_backward(vec)
        with torch.no_grad():
            return fn(vec)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (vec,) = ctx.saved_tensors
        return ctx.bwd(vec, grad), None, None


class _NativeFeatures(torch.autograd.Function):
    """Features of all atoms by the fused C++ kernel; its backward recomputes every term
    and contracts it with ``dE/dG`` (nothing stored but the edge vectors)."""

    @staticmethod
    def forward(
        ctx: Any,
        vec: torch.Tensor,
        plan: NativePlan,
        index: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        ctx.plan, ctx.index = plan, index
        ctx.save_for_backward(vec)
        return native_forward(plan, vec, *index, torch.get_num_threads())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (vec,) = ctx.saved_tensors
        start, centre_elem, nbr_elem = ctx.index
        threads = torch.get_num_threads()
        grad_vec = native_backward(ctx.plan, vec, start, centre_elem, nbr_elem, grad, threads)
        return grad_vec, None, None


class BPNNPotential(Potential):
    """Behler-Parrinello potential reproducing n2p2's predictions.

    Per atom ``i`` of element ``e``: symmetry functions ``G_i`` (n2p2 types 2, 3, 9, 12,
    13, 20-25) of its neighbours, scaled as in ``scaling.data``, fed to the element's
    network; ``E_i = (NN_e(G_i) / conv_energy + mean_energy + atom_energy_e) * energy_unit``.
    Edge vectors arrive in Å and are divided by the potential's length unit first.

    Args:
        data: a potential folder read by :func:`atomshard.io.n2p2.read_n2p2_potential`.
        dtype: dtype of symmetry functions and networks (geometry in, energies out are
            float64 either way).
        backward: ``"recompute"`` (default) keeps only edge vectors per block and
            recomputes the block in the backward pass; ``"store"`` keeps the whole
            autograd graph of every block (more memory; also supports double backward);
            ``"explicit"``: hand-written backward of the torch path.
        block_pairs: neighbour pairs per block of the torch path (bounds the memory of
            angular terms).
        kernel: ``"native"`` the fused C++ kernel (types 2, 3, 9, 12, 13; forces by its
            hand-written backward, no double backward), ``"torch"`` the torch path (all
            types, every backward mode), ``"auto"`` (default) native where the potential's
            functions allow it, the kernel builds and ``backward`` is not ``"store"``.
    """

    needs_feature_exchange = False

    def __init__(
        self,
        data: N2P2Potential,
        *,
        dtype: torch.dtype = torch.float64,
        backward: str = "recompute",
        block_pairs: int = 1 << 19,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        if backward not in BACKWARD_MODES:
            raise InputError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
        if kernel not in KERNELS:
            raise InputError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if block_pairs < 1:
            raise InputError(f"block_pairs must be positive, got {block_pairs}")
        s = data.settings
        self.settings = s
        self.units = data.units
        self.folder = data.folder
        self.dtype = dtype
        self.backward_mode = backward
        self.block_pairs = int(block_pairs)
        self.atomic_numbers = tuple(s.atomic_numbers)
        self.plan = SymmetryPlan(
            s.symmetry_functions, s.atomic_numbers, s.cutoff_type, s.cutoff_alpha, dtype
        )
        self.cutoff = self.plan.max_cutoff * data.units.length
        self.native: NativePlan | None = None
        if kernel != "torch":
            usable = supports(s.symmetry_functions) and backward != "store"
            if kernel == "native" and not usable:
                raise InputError(
                    "kernel='native' needs symmetry functions of types 2, 3, 9, 12, 13 only "
                    f"and backward != 'store' (potential {data.folder})"
                )
            if usable and load_kernel() is None:
                if kernel == "native":
                    from atomshard.models.bpnn._native import kernel_unavailable_reason

                    raise InputError(f"native kernel unavailable: {kernel_unavailable_reason()}")
            elif usable:
                self.native = NativePlan(s)
        self.kernel = "native" if self.native is not None else "torch"
        lut = torch.full((119,), -1, dtype=torch.int64)
        lut[torch.tensor(s.atomic_numbers)] = torch.arange(len(s.atomic_numbers))
        self.element_of_z: torch.Tensor = lut
        self.activations = s.activations
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.n_layers = len(s.hidden_nodes) + 1
        shifts, factors = [], []
        for e in range(len(s.atomic_numbers)):
            for w, b in zip(data.weights[e], data.biases[e], strict=True):
                self.weights.append(nn.Parameter(torch.tensor(w, dtype=dtype)))
                self.biases.append(nn.Parameter(torch.tensor(b, dtype=dtype)))
            shift, factor = _scaling(data.scaling[e], s.scaling, s.scale_min, s.scale_max)
            shifts.append(shift.to(dtype))
            factors.append(factor.to(dtype))
        self.scale_shift = shifts
        self.scale_factor = factors
        self.energy_offset = [
            s.mean_energy + s.atom_energy.get(e, 0.0) for e in range(len(s.atomic_numbers))
        ]

    def features(self, graph: AtomicGraph, edge_vec: torch.Tensor) -> torch.Tensor:
        """Unscaled symmetry functions of every atom (n2p2 order, zero-padded).

        Shapes:
            edge_vec: ``[n_edges, 3]`` float64, Å
            returns: ``[n_atoms, n_features_max]`` in :attr:`dtype`
        """
        elem = self.element_of_z[graph.species]
        vec = (edge_vec / self.units.length).to(self.dtype)
        dst, src = graph.dst, graph.src
        if dst.numel() > 1 and not bool((dst[1:] >= dst[:-1]).all()):
            order = torch.argsort(dst, stable=True)
            vec, dst, src = vec.index_select(0, order), dst[order], src[order]
        n_atoms = graph.n_atoms
        counts = torch.bincount(dst, minlength=n_atoms)
        if self.native is not None:
            edge_start = torch.zeros(n_atoms + 1, dtype=torch.int64)
            torch.cumsum(counts, 0, out=edge_start[1:])
            index = (edge_start, elem.contiguous(), elem[src].contiguous())
            if vec.requires_grad:
                return _NativeFeatures.apply(vec.contiguous(), self.native, index)
            return native_forward(self.native, vec.contiguous(), *index, torch.get_num_threads())
        pairs = counts * (counts - 1) // 2
        block_of = (torch.cumsum(pairs, 0) - pairs) // self.block_pairs
        _, atoms_per_block = torch.unique_consecutive(block_of, return_counts=True)
        atom_start = torch.cumsum(atoms_per_block, 0) - atoms_per_block
        edge_end = torch.cumsum(counts, 0)
        blocks = []
        for a0, na in zip(atom_start.tolist(), atoms_per_block.tolist(), strict=True):
            e0 = int(edge_end[a0 - 1]) if a0 > 0 else 0
            e1 = int(edge_end[a0 + na - 1])
            center = dst[e0:e1] - a0
            fn, bwd = _block_fns(self.plan, center, elem[dst[e0:e1]], elem[src[e0:e1]], na)
            v = vec[e0:e1]
            if self.backward_mode == "explicit" and v.requires_grad:
                blocks.append(_ExplicitFeatures.apply(v, fn, bwd))
            elif self.backward_mode == "recompute" and v.requires_grad:
                blocks.append(_RecomputedFeatures.apply(v, fn))
            else:
                blocks.append(fn(v))
        if not blocks:
            return torch.zeros(0, self.plan.n_features_max, dtype=self.dtype)
        return torch.cat(blocks, 0)

    def network_energies(self, features: torch.Tensor, elem: torch.Tensor) -> torch.Tensor:
        """Per-atom energies in the potential's energy unit from unscaled features.

        Shapes:
            features: ``[n_atoms, n_features_max]``; elem: ``[n_atoms]`` element indices
            returns: ``[n_atoms]`` float64
        """
        out = torch.zeros(features.shape[0], dtype=torch.float64)
        for e in range(len(self.atomic_numbers)):
            idx = torch.nonzero(elem == e).squeeze(1)
            if idx.numel() == 0:
                continue
            n_sf = self.plan.n_features[e]
            y = (features.index_select(0, idx)[:, :n_sf] - self.scale_shift[e]) * self.scale_factor[
                e
            ] + self.settings.scale_min
            for layer in range(self.n_layers):
                w = self.weights[e * self.n_layers + layer]
                b = self.biases[e * self.n_layers + layer]
                y = activation(torch.addmm(b, y, w.t()), self.activations[layer])
            nn_out = y.squeeze(1).to(torch.float64) / self.settings.conv_energy
            out = out.index_put((idx,), nn_out + self.energy_offset[e])
        return out

    def atomic_energies(
        self, graph: AtomicGraph, edge_vec: torch.Tensor, exchange: Exchange
    ) -> torch.Tensor:
        """Per-atom energies (strictly local: ``exchange`` is never needed).

        Shapes:
            edge_vec: ``[n_edges, 3]`` float64, Å
            returns: ``[n_atoms]`` float64, eV
        """
        self.check_species(graph.species)
        feats = self.features(graph, edge_vec)
        elem = self.element_of_z[graph.species]
        energies = self.network_energies(feats, elem) * self.units.energy
        if edge_vec.requires_grad and not energies.requires_grad:
            # isolated atoms: keep energies connected to the geometry (zero gradient)
            energies = energies + 0.0 * edge_vec.sum()
        return energies

    def evaluate_positions(
        self,
        positions: Any,
        numbers: Any,
        cell: Any,
        *,
        stress: bool = True,
        chunk_atoms: int = 1 << 16,
    ) -> Properties:
        """Energy, forces (and stress) of a periodic structure with no edge list.

        The fused kernel finds each atom's neighbours in a cell list as it goes, so memory
        is a few hundred bytes per atom (positions, bins, symmetry functions and their
        gradients; the networks run ``chunk_atoms`` atoms at a time) instead of the
        graph's ~10 KiB per atom: the path for millions of atoms. Same numbers as
        :func:`~atomshard.models.compute_properties` on the graph (to round-off).

        Needs the native kernel and a periodic cell at least three cutoffs wide (between
        opposite faces) in every direction.

        Shapes:
            positions: ``[n, 3]`` Å; numbers: ``[n]`` atomic numbers; cell: ``[3, 3]`` rows, Å
        """
        if self.native is None:
            raise InputError("evaluate_positions needs the native kernel (kernel='native')")
        length = self.units.length
        cell_t = torch.as_tensor(cell, dtype=torch.float64).reshape(3, 3) / length
        species = torch.as_tensor(numbers, dtype=torch.int64)
        self.check_species(species)
        elem = self.element_of_z[species].contiguous()
        volume = float(torch.linalg.det(cell_t).abs())
        rc = self.plan.max_cutoff
        normals = torch.linalg.cross(cell_t[[1, 2, 0]], cell_t[[2, 0, 1]])
        widths = volume / torch.linalg.vector_norm(normals, dim=1)
        nb = torch.floor(widths / rc).to(torch.int64)
        if volume == 0.0 or bool((nb < 3).any()):
            raise InputError(
                f"evaluate_positions needs a periodic cell at least 3 cutoffs "
                f"({3 * self.cutoff:.2f} Å) wide in every direction; widths "
                f"{[round(float(w) * length, 2) for w in widths]} Å: use the graph path"
            )
        frac = torch.as_tensor(positions, dtype=torch.float64).reshape(-1, 3) / length
        frac = frac @ torch.linalg.inv(cell_t)
        frac -= torch.floor(frac)
        bins = torch.minimum((frac * nb).to(torch.int64), nb - 1)
        bin_of = (bins[:, 0] * nb[1] + bins[:, 1]) * nb[2] + bins[:, 2]
        del bins
        order = torch.argsort(bin_of, stable=True)
        counts = torch.bincount(bin_of, minlength=int(nb.prod()))
        bin_start = torch.zeros(counts.numel() + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=bin_start[1:])
        pos = (frac @ cell_t).contiguous()
        del frac
        cells = {
            **{"pos": pos, "elem": elem, "cell": cell_t.contiguous(), "nb": nb},
            **{"bin_of": bin_of, "bin_start": bin_start, "order": order, "cutoff": rc},
        }
        n = elem.numel()
        threads = torch.get_num_threads()
        feats = torch.empty(n, self.plan.n_features_max, dtype=self.dtype)
        native_cells(self.native, cells, features=feats, n_threads=threads)
        energies = torch.empty(n, dtype=torch.float64)
        grad = torch.empty_like(feats)
        for a in range(0, n, chunk_atoms):
            g = feats[a : a + chunk_atoms].requires_grad_(True)
            with torch.enable_grad():
                e = self.network_energies(g, elem[a : a + chunk_atoms])
                (grad[a : a + chunk_atoms],) = torch.autograd.grad(e.sum(), g)
            energies[a : a + chunk_atoms] = e.detach()
        del feats
        result = native_cells(self.native, cells, grad=grad, n_threads=threads)
        assert result is not None
        forces, virial = result
        scale = self.units.energy
        energies *= scale
        forces *= scale / length
        virial *= scale
        out = Properties(energy=energies.sum(), energies=energies, forces=forces)
        if stress:
            out.virial = virial
            out.stress = -virial / (volume * length**3)
        return out

    def extra_repr(self) -> str:
        return (
            f"folder={str(self.folder)!r}, elements={self.settings.elements}, "
            f"cutoff={self.cutoff:.4f} Å, dtype={self.dtype}, backward={self.backward_mode}, "
            f"kernel={self.kernel}"
        )


def _block_fns(
    plan: SymmetryPlan,
    center: torch.Tensor,
    center_elem: torch.Tensor,
    nbr_elem: torch.Tensor,
    n_centers: int,
) -> tuple[
    Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
]:
    def fn(vec: torch.Tensor) -> torch.Tensor:
        return block_features(plan, vec, center, center_elem, nbr_elem, n_centers)

    def bwd(vec: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return block_features_backward(
            plan, vec, center, center_elem, nbr_elem, n_centers, grad.contiguous()
        )

    return fn, bwd


def _scaling(table: Any, mode: str, smin: float, smax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shift, factor)`` with ``scaled = (G - shift) * factor + smin`` (n2p2's formulas)."""
    t = torch.as_tensor(table, dtype=torch.float64)
    gmin, gmax, gmean, gsigma = t.unbind(1)
    one = torch.ones_like(gmin)
    if mode == "none":
        return torch.zeros_like(gmin), one  # and scale_min is 0 then
    if mode == "center":
        return gmean, one
    span = gsigma if mode == "sigma" else gmax - gmin
    # A function that never varied in training carries no information: n2p2 warns, we zero it.
    factor = torch.where(span != 0, (smax - smin) / torch.where(span != 0, span, one), 0 * one)
    return (gmin if mode == "scale" else gmean), factor


def load_n2p2_potential(
    folder: str | Path,
    dtype: torch.dtype = torch.float64,
    *,
    length_unit: str | float | None = None,
    energy_unit: str | float | None = None,
    backward: str = "recompute",
    kernel: str = "auto",
) -> BPNNPotential:
    """Load an n2p2 potential folder as a :class:`BPNNPotential`.

    Args:
        folder: directory with ``input.nn``, ``scaling.data``, ``weights.ZZZ.data``.
        dtype: float64 (exact to n2p2) or float32.
        length_unit, energy_unit: the potential's units (see
            :func:`atomshard.io.n2p2.read_n2p2_potential`).
        backward, kernel: see :class:`BPNNPotential`.
    """
    data = read_n2p2_potential(folder, length_unit=length_unit, energy_unit=energy_unit)
    return BPNNPotential(data, dtype=dtype, backward=backward, kernel=kernel)
