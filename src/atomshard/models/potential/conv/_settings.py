"""The run-time knobs of the NequIP convolution: one frozen :class:`ConvSettings`.

None of them changes a number (every combination gives the same results to round-off);
they trade speed against memory. Their defaults and the thresholds the ``"auto"`` choices
use are the constants below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atomshard.errors import InputError

#: Implementations of the convolution: the fused chunks of this package, or e3nn's
#: ``TensorProduct`` (the reference).
CONVOLUTIONS = ("fused", "e3nn")
#: Edges per chunk when chunks are not recomputed, and the most ``"auto"`` ever takes.
DEFAULT_CHUNK_EDGES = 16384
#: ``chunk_edges="auto"`` with recompute: about this many bytes of per-edge temporaries per
#: chunk (:meth:`FusedUVUConvolution.auto_chunk_edges`), so the chunk's transient memory
#: does not depend on how wide a layer is.
AUTO_CHUNK_BYTES = 384 << 20
#: The fewest edges ``"auto"`` puts in a chunk: below it the ops of a chunk are too small
#: to keep a second thread busy (docs/performance.md).
MIN_AUTO_CHUNK_EDGES = 4096
#: ``recompute="auto"`` recomputes a layer's chunks in the backward pass when keeping their
#: radial weights (``n_edges * weight_numel`` values, times ``MAX_NODE_PADDING`` unless the
#: layout is ``"edges"``: the node layout keeps them per slot) would take more than this
#: many bytes, so that all stored weights stay below ``n_layers`` times it whatever the
#: system size. Storing is faster while the weights fit in cache-friendly sizes;
#: recomputing holds far less memory.
AUTO_RECOMPUTE_BYTES = 512 << 20
#: Layouts of a chunk's per-edge work (:attr:`FusedUVUConvolution.layout`).
LAYOUTS = ("auto", "edges", "nodes")
#: The layout a new convolution starts with (:attr:`ConvSettings.layout`).
DEFAULT_LAYOUT = "auto"
#: ``layout="auto"`` takes the node layout while its padded slots are at most this many
#: times the chunk's edges: bulk crystals, slabs in vacuum and amorphous oxides at a 5 Å
#: cutoff all pad well below it, and there the node layout is the faster one.
MAX_NODE_PADDING = 1.5
#: ... and while no single chunk pads by more than this.
MAX_CHUNK_PADDING = 3.0
#: Above this much padding a (serial) call reorders its destination nodes by in-degree
#: before cutting chunks (:meth:`FusedUVUConvolution.forward`), so that a chunk's rows
#: have similar in-degrees. Below it the atoms keep their order, whose spatial locality
#: keeps the gathers of a chunk's sources in cache.
SORT_NODE_PADDING = 1.1
#: How chunks get their backward (:attr:`ConvSettings.chunk_backward`).
CHUNK_BACKWARDS = ("manual", "autograd")

_AUTO_OR_BOOL = "choose True, False or 'auto'"


def _default_layout() -> str:
    return DEFAULT_LAYOUT  # read when a settings object is made, so that tests can set it


@dataclass(frozen=True, kw_only=True)
class ConvSettings:
    """How the NequIP convolution runs (a run-time choice, never stored in a checkpoint).

    :meth:`~atomshard.models.potential.NequIPPotential.set_convolution` replaces the fields
    it is given, on the model and on each layer's :class:`FusedUVUConvolution`.

    Attributes:
        kind: ``"fused"`` (specialised, chunked; the default) or ``"e3nn"`` (the reference
            ``TensorProduct`` path).
        layout: how a fused chunk lays out its per-edge work: ``"edges"`` (one row per
            edge, the node sums a scatter), ``"nodes"`` (``[n_nodes, in-degree]`` slots,
            the sums over a node's edges folded into batched matrix products), or
            ``"auto"`` (nodes on the CPU while the padding stays within
            :data:`MAX_NODE_PADDING`, else edges).
        chunk_edges: edges per fused chunk, or ``"auto"`` (with recompute, as many as fit
            about :data:`AUTO_CHUNK_BYTES` of per-edge temporaries for that layer's width,
            else :data:`DEFAULT_CHUNK_EDGES`).
        recompute: keep only each chunk's inputs for the backward pass, which then re-forms
            the radial weights and 3j products (memory linear in edges with a small
            constant; a little slower than storing on small systems, far faster once the
            stored weights would not fit): True, False, or ``"auto"`` (for a layer whose
            radial weights would take more than :data:`AUTO_RECOMPUTE_BYTES`).
        chunk_backward: ``"manual"`` (the hand-written backward of ``_ChunkFunction``,
            stored or recomputed) or ``"autograd"`` (the reference: autograd through the
            stored chunk's ops; ``torch.utils.checkpoint`` for a recomputed one).
        overlap: in the graph-parallel runtime, compute each layer's interior nodes while
            its halo exchange is in flight (fused convolution only): True, False, or
            ``"auto"`` (on only when the model runs on a CUDA device).
        checkpoint: keep only each layer's input node features (and the edge vectors) for
            the backward pass, which re-runs the layer's forward first: True, False or
            ``"auto"`` (on for serial graphs whose node activations exceed the model's
            ``AUTO_CHECKPOINT_BYTES``; never in the graph-parallel runtime, where re-running
            a layer would repeat its halo exchange inside the backward pass).

    Raises:
        InputError: a field outside its choices, naming the field and the value.
    """

    kind: str = "fused"
    layout: str = field(default_factory=_default_layout)
    chunk_edges: int | str = "auto"
    recompute: bool | str = "auto"
    chunk_backward: str = "manual"
    overlap: bool | str = True
    checkpoint: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in CONVOLUTIONS:
            raise InputError(f"unknown convolution {self.kind!r}; choose one of {CONVOLUTIONS}")
        if self.chunk_edges != "auto":
            if isinstance(self.chunk_edges, bool | str) or int(self.chunk_edges) < 1:
                raise InputError(
                    f"chunk_edges={self.chunk_edges!r}: must be a positive integer or 'auto'"
                )
            object.__setattr__(self, "chunk_edges", int(self.chunk_edges))
        for name in ("recompute", "overlap", "checkpoint"):
            value = getattr(self, name)
            if not isinstance(value, bool) and value != "auto":
                raise InputError(f"{name}={value!r}: {_AUTO_OR_BOOL}")
        if self.layout not in LAYOUTS:
            raise InputError(f"layout={self.layout!r}: choose one of {LAYOUTS}")
        if self.chunk_backward not in CHUNK_BACKWARDS:
            raise InputError(
                f"chunk_backward={self.chunk_backward!r}: choose one of {CHUNK_BACKWARDS}"
            )
