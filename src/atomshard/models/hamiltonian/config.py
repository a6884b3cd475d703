"""Configuration of the SO(2) equivariant Hamiltonian model."""

from __future__ import annotations

from dataclasses import dataclass, field

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis

__all__ = ["DTYPES", "HamiltonianConfig"]

#: body dtypes; "bfloat16" keeps float32 weights and runs the body under autocast
DTYPES = ("float32", "float64", "bfloat16")


def _shell_string(ls: tuple[int, ...]) -> str:
    out, prev, count = "", None, 0
    for l in (*ls, -1):
        if l == prev:
            count += 1
            continue
        if prev is not None:
            out += f"{count}{'spdfghi'[prev]}"
        prev, count = l, 1
    return out


@dataclass(frozen=True, kw_only=True)
class HamiltonianConfig:
    """Hyper-parameters of :class:`~atomshard.models.hamiltonian.HamiltonianModel`.

    Attributes:
        basis: element -> shells, DeePTB-style strings (``{"O": "2s1p", "H": "1s"}``);
            stored canonically (run-length, shell order kept)
        cutoff: graph cutoff, Å (blocks of pairs farther apart are predicted as zero)
        l_max: highest degree of the embeddings; at least twice the basis' highest l,
            because an ``l_a x l_b`` block needs ``L`` up to ``l_a + l_b`` (0: that minimum)
        channels: ``E``, channels per ``(l, m)`` of node and edge embeddings
        hidden: channels inside the SO(2) message transform
        n_layers: message-passing layers (node update, then edge update)
        n_rbf: Gaussian radial basis functions initialising the edge embeddings
        dtype: network body dtype (geometry and Wigner-D are float64 always)
        edge_envelope: width ``w`` in Å of a smooth switch-off of the edge blocks: they
            are multiplied by 1 below ``cutoff - w`` and ``(1 + cos(π (r - cutoff + w) /
            w)) / 2`` above, so they reach zero at the cutoff with zero slope (0: off)
        edge_baseline: Gaussians of a fixed two-centre baseline of each element pair's
            edge blocks (:class:`~atomshard.models.hamiltonian.heads.RadialBaseline`),
            fitted to the training targets by least squares; the network predicts the
            rest (0: off)
        node_baseline: Gaussians of a fixed pair-additive baseline of the node blocks,
            ``Σ_j f^{Z_i Z_j}(r_ij) Y_L(r̂_ij)`` over the neighbours within the cutoff
            (crystal-field-like), fitted by least squares (0: off)
    """

    basis: dict[str, str] = field(default_factory=dict)
    cutoff: float = 6.0
    l_max: int = 0
    channels: int = 16
    hidden: int = 32
    n_layers: int = 3
    n_rbf: int = 16
    dtype: str = "float32"
    edge_envelope: float = 0.0
    edge_baseline: int = 0
    node_baseline: int = 0

    def __post_init__(self) -> None:
        basis = OrbitalBasis.from_spec(self.basis)  # validates, names bad entries
        object.__setattr__(self, "basis", {k: _shell_string(v) for k, v in basis.shells.items()})
        need = 2 * basis.l_max
        if self.l_max == 0:
            object.__setattr__(self, "l_max", max(need, 1))
        elif self.l_max < need:
            raise InputError(
                f"l_max = {self.l_max} is too small for the basis: its "
                f"highest shell l = {basis.l_max} needs l_max >= {need}"
            )
        if not self.cutoff > 0:
            raise InputError(f"cutoff must be > 0 Å, got {self.cutoff!r}")
        for name in ("channels", "hidden", "n_layers", "n_rbf"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.edge_envelope <= self.cutoff:
            raise InputError(
                f"edge_envelope must be in [0, cutoff = {self.cutoff}] Å, "
                f"got {self.edge_envelope!r}"
            )
        for name in ("edge_baseline", "node_baseline"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def orbital_basis(self) -> OrbitalBasis:
        return OrbitalBasis.from_spec(self.basis)
