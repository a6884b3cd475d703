"""The NequIP/SevenNet-class E(3)-equivariant message-passing potential.

One interaction layer (``t``) maps node features ``x`` (irreps ``X_t``) to ``X_{t+1}``::

    sc  = SelfConnection(x)                      # linear, or tensor product with species
    h   = Linear_1(x)
    h   = exchange(h)                            # refresh halo rows (identity serially)
    w   = RadialMLP_t(B(r) f_cut(r))             # per-edge tensor-product weights
    m_k = TP_uvu(h[src_k], Y(r̂_k); w_k)          # one path per (x irrep, Y irrep, out irrep)
    a   = Σ_{k: dst_k = i} m_k / sqrt(avg_num_neighbors_t)
    x'  = Gate(Linear_2(a) + sc)

followed by a scalar readout ``Linear -> Linear`` and a per-species affine map
``E_i = scale[Z_i] * e_i + shift[Z_i]`` in float64. Geometry (edge lengths, Bessel basis,
cutoff, spherical harmonics) is float64; the body runs in ``config.dtype``.

The composition (module order, irreps ordering, normalisations) follows SevenNet's
NequIP block so that SevenNet checkpoints convert weight for weight
(:mod:`atomshard.models.potential.sevennet`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn
from torch.utils.checkpoint import checkpoint as layer_checkpoint

from atomshard.graph import AtomicGraph
from atomshard.models.base import Exchange, Potential, Shells, owned_rows, startable
from atomshard.models.potential.config import NequIPConfig
from atomshard.models.potential.conv import ConvSettings, FusedUVUConvolution, OverlapPlan
from atomshard.nn.linear import apply_linear
from atomshard.nn.radial import ACTIVATIONS, BesselBasis, PolynomialCutoff, RadialMLP, XPLORCutoff

#: ``checkpoint="auto"`` keeps only each layer's input for the backward pass (and the edge
#: vectors instead of the float64 edge-feature graph), serially, once the node activations
#: it drops (:meth:`NequIPPotential.activation_bytes`) would exceed this many bytes.
AUTO_CHECKPOINT_BYTES = 4 << 30


def filter_irreps(config: NequIPConfig) -> o3.Irreps:
    """Irreps of the edge spherical harmonics: ``0e+1o+2e...`` (parity) or ``0e+1e+2e...``."""
    return o3.Irreps.spherical_harmonics(config.l_max, p=-1 if config.parity else 1)


def _allowed(ir: o3.Irrep, l_max: int, even_only: bool) -> bool:
    return ir.l <= l_max and (not even_only or ir.p == 1)


def node_irreps(config: NequIPConfig) -> list[o3.Irreps]:
    """Node irreps after the embedding and after each layer (``n_layers + 1`` entries).

    Without ``hidden_irreps``, layer ``t`` outputs every irrep reachable from its input and
    the spherical harmonics with ``l <= l_max`` (scalars only, even only, after the last
    layer), each with ``channels`` copies.
    """
    if config.hidden_irreps is not None:
        return [o3.Irreps(s) for s in config.hidden_irreps]
    filt = filter_irreps(config)
    out = [o3.Irreps(f"{config.channels}x0e")]
    for t in range(config.n_layers):
        last = t == config.n_layers - 1
        l_max = 0 if last else config.l_max
        found = {
            ir_out
            for _, ir_x in out[-1]
            for _, ir_f in filt
            for ir_out in ir_x * ir_f
            if _allowed(ir_out, l_max, last)
        }
        ordered = o3.Irreps([(1, ir) for ir in found]).sort().irreps
        out.append(o3.Irreps([(config.channels, ir) for _, ir in ordered]))
    return out


def convolution_paths(
    irreps_x: o3.Irreps, filt: o3.Irreps, l_max_out: int, even_only: bool
) -> tuple[o3.Irreps, list[tuple[int, int, int, str, bool]]]:
    """Output irreps and ``uvu`` instructions of a convolution, sorted by output irrep.

    Every path ``(x irrep i) ⊗ (Y irrep j) -> ir_out`` with ``ir_out`` allowed gets its own
    output block of multiplicity ``mul_x``; blocks are sorted by irrep (stable), and the
    instructions by output block, which fixes the layout of the radial MLP's output.
    """
    mid: list[tuple[int, o3.Irrep]] = []
    raw: list[tuple[int, int, int]] = []
    for i, (mul, ir_x) in enumerate(irreps_x):
        for j, (_, ir_f) in enumerate(filt):
            for ir_out in ir_x * ir_f:
                if _allowed(ir_out, l_max_out, even_only):
                    raw.append((i, j, len(mid)))
                    mid.append((mul, ir_out))
    irreps_mid, perm, _ = o3.Irreps(mid).sort()
    instructions = sorted(((i, j, perm[k], "uvu", True) for i, j, k in raw), key=lambda s: s[2])
    return irreps_mid, instructions


def _gate(irreps_out: o3.Irreps, config: NequIPConfig) -> Gate:
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    gate_parity = 1 if o3.Irrep("0e") in scalars else -1
    gates = o3.Irreps([(mul, (0, gate_parity)) for mul, _ in gated])
    act = lambda pair, p: ACTIVATIONS[pair[0] if p == 1 else pair[1]]  # noqa: E731
    return Gate(
        scalars,
        [act(config.scalar_activation, ir.p) for _, ir in scalars],
        gates,
        [act(config.gate_activation, ir.p) for _, ir in gates],
        gated,
    )


def _reload_3j(module: nn.Module, incompatible_keys: object) -> None:
    assert isinstance(module, Interaction)
    module.fused.load_3j(module.tp)


class Interaction(nn.Module):
    """One NequIP interaction layer (see the module docstring).

    Args:
        irreps_in: node irreps ``X_t``.
        irreps_out: node irreps ``X_{t+1}`` (gate outputs).
        config: the model config (radial MLP, activations, self-connection).
        layer: index ``t`` of the layer.
    """

    def __init__(
        self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, config: NequIPConfig, layer: int
    ) -> None:
        super().__init__()
        last = layer == config.n_layers - 1
        self.irreps_in = irreps_in
        self.irreps_out = irreps_out
        self.gate = _gate(irreps_out, config)
        gate_in = self.gate.irreps_in
        self.self_connection: nn.Module | None
        if config.self_connection == "linear":
            self.self_connection = o3.Linear(irreps_in, gate_in)
        elif config.self_connection == "species":
            species_irreps = o3.Irreps(f"{len(config.species)}x0e")
            self.self_connection = o3.FullyConnectedTensorProduct(
                irreps_in, species_irreps, gate_in
            )
        else:
            self.self_connection = None
        self.linear_1 = o3.Linear(irreps_in, irreps_in, biases=config.linear_biases)
        filt = filter_irreps(config)
        irreps_mid, instructions = convolution_paths(irreps_in, filt, irreps_out.lmax, last)
        self.tp = o3.TensorProduct(
            irreps_in,
            filt,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.fused = FusedUVUConvolution(self.tp)
        # a loaded state dict may bring its own 3j buffers for the e3nn path: follow them
        self.register_load_state_dict_post_hook(_reload_3j)
        self.radial = RadialMLP(
            [config.n_radial, *config.radial_hidden, self.tp.weight_numel],
            config.radial_activation,
        )
        self.linear_2 = o3.Linear(irreps_mid, gate_in, biases=config.linear_biases)
        self.denominator = math.sqrt(config.avg_num_neighbors[layer])  # type: ignore[index]

    @property
    def settings(self) -> ConvSettings:
        """The run-time knobs of this layer's convolution (its ``fused`` module's; set them
        with :meth:`NequIPPotential.set_convolution`)."""
        return self.fused.settings

    @property
    def convolution(self) -> str:
        """``"fused"`` (default, :mod:`~atomshard.models.potential.conv`) or ``"e3nn"`` (the
        reference ``TensorProduct`` path)."""
        return self.settings.kind

    @property
    def chunk_edges(self) -> int | str:
        """Edges per fused chunk, or ``"auto"`` (:attr:`ConvSettings.chunk_edges`)."""
        return self.settings.chunk_edges

    @property
    def recompute(self) -> bool | str:
        """Whether fused chunks are recomputed (:attr:`ConvSettings.recompute`)."""
        return self.settings.recompute

    def _linear_2(self, agg: torch.Tensor) -> torch.Tensor:
        return apply_linear(self.linear_2, agg / self.denominator)

    def forward(
        self,
        x: torch.Tensor,
        species_one_hot: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        exchange: Exchange,
        overlap: OverlapPlan | None = None,
        *,
        n_out: int | None = None,
    ) -> torch.Tensor:
        """Update node features.

        ``x`` holds the owned rows (all rows serially); the exchange returns the local rows
        (owned, then halo) the edges' sources index, and every edge points into an owned row.

        ``n_out`` (serially, a block's shells: :class:`~atomshard.models.base.Shells`) asks
        for the first ``n_out`` rows only: every edge points into them, and the
        self-connection, ``linear_2`` and gate run on those rows alone.

        With ``overlap`` (the graph-parallel runtime, fused convolution), ``edge_sh`` and
        ``edge_radial`` come in the plan's edge order, ``src``/``dst`` are not used (the
        plan's are), and the exchange is started, the interior nodes computed while it is in
        flight, then waited for (:meth:`FusedUVUConvolution.forward_overlapped`).

        Shapes:
            x: ``[n_owned, irreps_in.dim]``
            species_one_hot: ``[n_owned, n_species]``
            edge_sh: ``[n_edges, filter.dim]``
            edge_radial: ``[n_edges, n_radial]`` (basis times cutoff)
            src: ``[n_edges]`` int64 local rows (``< n_local``); dst: ``[n_edges]`` (``< n_owned``)
            returns: ``[n_owned, irreps_out.dim]`` (``[n_out, …]`` with ``n_out``)
        """
        n_rows = x.shape[0] if n_out is None else int(n_out)
        if overlap is not None and n_rows != x.shape[0]:
            raise ValueError("n_out is for a serial block, not the overlapped exchange")
        x_out = x[:n_rows]  # a view
        if self.self_connection is None:
            sc = None
        elif isinstance(self.self_connection, o3.FullyConnectedTensorProduct):
            sc = self.self_connection(x_out, species_one_hot[:n_rows])
        else:
            sc = self.self_connection(x_out)
        if overlap is not None:
            h_owned = apply_linear(self.linear_1, x)
            started = startable(exchange)
            if started is None:
                raise ValueError("an overlap plan needs an exchange that can be started")
            out = self.fused.forward_overlapped(
                h_owned,
                started.start(h_owned),
                edge_sh,
                edge_radial,
                self.radial,
                overlap,
                post=self._linear_2,
            ).index_select(0, overlap.pos)
            if sc is not None:
                out = out + sc
            return self.gate(out)
        h = exchange(apply_linear(self.linear_1, x))
        if self.convolution == "fused":
            out = self.fused(
                h,
                edge_sh,
                edge_radial,
                self.radial,
                src,
                dst,
                n_out=n_rows,
                post=self._linear_2,
            )
        else:
            weights = self.radial(edge_radial)
            messages = self.tp(h.index_select(0, src), edge_sh, weights)
            agg = messages.new_zeros((n_rows, messages.shape[1])).index_add_(0, dst, messages)
            out = self._linear_2(agg)
        if sc is not None:
            out = out + sc
        return self.gate(out)


class NequIPPotential(Potential):
    """NequIP/SevenNet-class potential; build with :meth:`from_config`.

    Attributes:
        config: the :class:`NequIPConfig` it was built from.
    """

    config_class = NequIPConfig
    takes_shells = True
    #: the first layer's exchanged rows, Linear_1 of the species embedding, never depend
    #: on the positions
    position_free_exchanges = 1
    z_to_index: torch.Tensor
    energy_shift: torch.Tensor
    energy_scale: torch.Tensor

    def __init__(self, config: NequIPConfig) -> None:
        super().__init__()
        self.config = config
        self.cutoff = config.cutoff
        self.atomic_numbers = tuple(config.species)
        self.n_hops = config.n_layers
        n_species = len(config.species)
        body = config.torch_dtype

        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[list(config.species)] = torch.arange(n_species)
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        self.radial_basis = BesselBasis(
            config.cutoff, config.n_radial, trainable=config.trainable_radial
        )
        self.envelope: nn.Module
        if config.cutoff_kind == "xplor":
            self.envelope = XPLORCutoff(config.cutoff, config.cutoff_on)
        else:
            self.envelope = PolynomialCutoff(config.cutoff, config.cutoff_p)
        self.spherical_harmonics = o3.SphericalHarmonics(
            filter_irreps(config),
            normalize=config.normalize_sh,
            normalization="component",
            irreps_in=o3.Irreps("1x1o" if config.parity else "1x1e"),
        )

        irreps = node_irreps(config)
        self.node_irreps = irreps
        species_irreps = o3.Irreps(f"{n_species}x0e")
        self.embedding = o3.Linear(species_irreps, irreps[0], biases=config.linear_biases)
        self.layers = nn.ModuleList(
            Interaction(irreps[t], irreps[t + 1], config, t) for t in range(config.n_layers)
        )
        hidden = config.readout_hidden or max(irreps[-1].dim // 2, 1)
        self.readout_1 = o3.Linear(irreps[-1], f"{hidden}x0e", biases=config.linear_biases)
        self.readout_2 = o3.Linear(f"{hidden}x0e", "1x0e", biases=config.linear_biases)
        for module in (self.embedding, self.layers, self.readout_1, self.readout_2):
            module.to(body)
        #: the run-time knobs (:class:`ConvSettings`, set with :meth:`set_convolution`):
        #: ``overlap`` and ``checkpoint`` are read here, the rest by each layer's copy
        self.settings = ConvSettings()
        f64 = torch.float64
        self.register_buffer(
            "energy_shift", torch.tensor(config.energy_shift, dtype=f64), persistent=False
        )
        self.register_buffer(
            "energy_scale", torch.tensor(config.energy_scale, dtype=f64), persistent=False
        )

    @classmethod
    def from_config(cls, config: NequIPConfig) -> NequIPPotential:
        """Build a randomly initialised model from ``config``."""
        return cls(config)

    def interaction(self, t: int) -> Interaction:
        """The interaction layer ``t``."""
        layer = self.layers[t]
        assert isinstance(layer, Interaction)
        return layer

    @property
    def overlap(self) -> bool | str:
        """Overlap halo exchanges with interior nodes (:attr:`ConvSettings.overlap`)."""
        return self.settings.overlap

    @overlap.setter
    def overlap(self, value: bool | str) -> None:
        self.settings = dataclasses.replace(self.settings, overlap=value)

    @property
    def checkpoint(self) -> bool | str:
        """Layer checkpoints for the backward pass (:attr:`ConvSettings.checkpoint`)."""
        return self.settings.checkpoint

    @checkpoint.setter
    def checkpoint(self, value: bool | str) -> None:
        self.settings = dataclasses.replace(self.settings, checkpoint=value)

    def set_convolution(
        self,
        kind: str = "fused",
        *,
        chunk_edges: int | str | None = None,
        recompute: bool | str | None = None,
        overlap: bool | str | None = None,
        checkpoint: bool | str | None = None,
        layout: str | None = None,
    ) -> NequIPPotential:
        """Choose how every layer computes its convolution (a run-time setting, not stored).

        Replaces the given fields of :attr:`settings` and of every layer's
        :class:`~atomshard.models.potential.conv.ConvSettings` (which documents each knob);
        None keeps a field's current value. Every choice gives the same numbers to
        round-off.

        Args:
            kind: ``"fused"`` (specialised, chunked; the default) or ``"e3nn"`` (the
                reference ``TensorProduct`` path).
            chunk_edges: edges per chunk of the fused path, or ``"auto"``.
            recompute: keep only each chunk's inputs for the backward pass: True, False or
                ``"auto"`` (above ``AUTO_RECOMPUTE_BYTES`` of a layer's radial weights).
            overlap: in the graph-parallel runtime, compute each layer's interior nodes
                while its halo exchange is in flight: True (the default), False or
                ``"auto"`` (on CUDA only); docs/runtime.md.
            checkpoint: keep only each layer's input for the backward pass: True, False or
                ``"auto"`` (serial graphs whose :meth:`activation_bytes` exceed
                ``AUTO_CHECKPOINT_BYTES``).
            layout: ``"edges"``, ``"nodes"`` or ``"auto"`` (the node layout on the CPU
                while its padding stays small); docs/potential.md.

        Returns:
            the model itself.

        Raises:
            InputError: a value outside its choices (nothing is changed then).
        """
        given: dict[str, Any] = {
            name: value
            for name, value in (
                ("kind", kind),
                ("chunk_edges", chunk_edges),
                ("recompute", recompute),
                ("overlap", overlap),
                ("checkpoint", checkpoint),
                ("layout", layout),
            )
            if value is not None
        }
        settings = dataclasses.replace(self.settings, **given)  # validates
        layers = [self.interaction(t).fused for t in range(len(self.layers))]
        per_layer = [dataclasses.replace(conv.settings, **given) for conv in layers]
        self.settings = settings
        for conv, mine in zip(layers, per_layer):
            conv.settings = mine
        return self

    @property
    def body_dtype(self) -> torch.dtype:
        return self.readout_2.weight.dtype

    def edge_features(self, edge_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Radial embedding and spherical harmonics of the edges, computed in float64.

        Shapes:
            edge_vec: ``[n_edges, 3]`` Å
            returns: ``[n_edges, n_radial]`` and ``[n_edges, (l_max+1)^2]``, body dtype
        """
        vec = edge_vec.to(torch.float64)
        r = torch.linalg.vector_norm(vec, dim=-1)
        radial = self.radial_basis(r) * self.envelope(r).unsqueeze(-1)
        sh = self.spherical_harmonics(vec)
        body = self.body_dtype
        return radial.to(body), sh.to(body)

    def overlap_plan(self, graph: AtomicGraph, exchange: Exchange) -> OverlapPlan | None:
        """The edge order for overlapping exchanges with interior nodes, or None: serially,
        with an exchange that cannot be started, with ``overlap`` off (``"auto"``: off unless
        the graph is on a CUDA device), or when a layer uses the e3nn convolution."""
        wanted = graph.src.is_cuda if self.overlap == "auto" else bool(self.overlap)
        if not wanted or startable(exchange) is None:
            return None
        n_owned = owned_rows(exchange, graph.n_atoms)
        if n_owned == graph.n_atoms:  # no halo rows: nothing to overlap
            return None
        if any(self.interaction(t).convolution != "fused" for t in range(len(self.layers))):
            return None
        return OverlapPlan(graph.src, graph.dst, n_owned)

    def checkpointed(self, graph: AtomicGraph, exchange: Exchange) -> bool:
        """Whether this evaluation keeps layer checkpoints (see :meth:`set_convolution`):
        only with gradients wanted, and only serially (all rows owned)."""
        if not torch.is_grad_enabled() or owned_rows(exchange, graph.n_atoms) != graph.n_atoms:
            return False
        free_atoms = self.checkpoint_free_atoms()
        if free_atoms is not None:  # "auto"
            return graph.n_atoms > free_atoms
        return bool(self.checkpoint)

    def checkpoint_free_atoms(self) -> int | None:
        """The most atoms one evaluation may hold with ``checkpoint="auto"`` leaving the
        layer checkpoints off (:data:`AUTO_CHECKPOINT_BYTES` of :meth:`activation_bytes`);
        None when checkpoints are set on or off outright. Block-by-block evaluation keeps
        its blocks below this: recomputing checkpointed layers costs more than the smaller
        halo of larger blocks saves (docs/performance.md)."""
        if self.checkpoint != "auto":
            return None
        return AUTO_CHECKPOINT_BYTES // self.activation_bytes(1)

    def activation_bytes_per_atom(self) -> int:
        """:meth:`activation_bytes` of one atom (the engine's memory estimate,
        :class:`~atomshard.models.base.Capabilities`)."""
        return self.activation_bytes(1)

    def activation_bytes(self, n_atoms: int) -> int:
        """The node activations a force evaluation of ``n_atoms`` atoms keeps without layer
        checkpoints, estimated as every layer's input and gate input (``Σ_t dim X_t +
        dim gate_in_t`` values per atom, body dtype): about half of what such a step holds
        per atom at its peak (docs/performance.md)."""
        itemsize = torch.empty((), dtype=self.body_dtype).element_size()
        per_atom = 0
        for t in range(len(self.layers)):
            layer = self.interaction(t)
            per_atom += layer.irreps_in.dim + layer.gate.irreps_in.dim
        return int(n_atoms) * per_atom * itemsize

    def atomic_energies(
        self,
        graph: AtomicGraph,
        edge_vec: torch.Tensor,
        exchange: Exchange,
        *,
        shells: Shells | None = None,
    ) -> torch.Tensor:
        """Per-atom energies (eV, float64) of the owned atoms.

        Node-wise work (embedding, linears, self-connection, gates, readout) runs on the
        ``owned_rows(exchange, n_atoms)`` owned rows only (all rows serially); the halo
        rows' features come from the exchange before every convolution.

        With ``shells`` (serially; a block of a larger system, :mod:`atomshard.runtime.blocks`)
        layer ``t`` runs on the atoms within ``n_hops - t`` edges of the counted ones and on
        the edges into those within ``n_hops - 1 - t``; the energies of the ``shells.rows[0]``
        counted atoms come back, exactly those of the whole graph.

        Shapes:
            edge_vec: ``[n_edges, 3]`` float64 Å
            returns: ``[n_owned]`` float64 eV (``[shells.rows[0]]`` with ``shells``)
        """
        self.check_species(graph.species)
        n_own = owned_rows(exchange, graph.n_atoms)
        if shells is not None:
            if n_own != graph.n_atoms:
                raise ValueError("shells are for a serial graph (all rows owned)")
            if len(shells.rows) != len(self.layers) + 1 or len(shells.edges) != len(self.layers):
                raise ValueError(
                    f"shells for {len(shells.edges)} layers given to a {len(self.layers)}-layer "
                    "model"
                )
        index = self.z_to_index.index_select(0, graph.species[:n_own])
        one_hot = nn.functional.one_hot(index, len(self.atomic_numbers)).to(self.body_dtype)
        plan = self.overlap_plan(graph, exchange)
        checkpointed = plan is None and self.checkpointed(graph, exchange)
        if checkpointed:
            radial, sh = layer_checkpoint(
                self.edge_features, edge_vec, use_reentrant=False, preserve_rng_state=False
            )
        else:
            radial, sh = self.edge_features(edge_vec)
        if plan is not None:  # the edge features once in the plan's order, for all layers
            radial, sh = plan.edges(radial), plan.edges(sh)
        x = self.embedding(one_hot)
        n_layers = len(self.layers)
        for t, layer in enumerate(self.layers):
            args = (x, one_hot, sh, radial, graph.src, graph.dst, exchange, plan)
            n_out = None
            if shells is not None:  # leading rows and edges are views: nothing is copied
                rows, n_e = shells.rows[n_layers - t], shells.edges[n_layers - 1 - t]
                # layer t's output is needed one shell in: the next layer's input rows
                n_out = shells.rows[n_layers - 1 - t]
                x, one_hot = x[:rows], one_hot[:rows]
                args = (x, one_hot, sh[:n_e], radial[:n_e], graph.src[:n_e], graph.dst[:n_e],
                        exchange, plan)  # fmt: skip
            if checkpointed:
                x = layer_checkpoint(
                    layer, *args, n_out=n_out, use_reentrant=False, preserve_rng_state=False
                )
            else:
                x = layer(*args, n_out=n_out)
        if shells is not None:
            index = index[: shells.rows[0]]
        e = self.readout_2(self.readout_1(x)).squeeze(-1).to(torch.float64)
        return e * self.energy_scale.index_select(0, index) + self.energy_shift.index_select(
            0, index
        )
