"""The Allegro potential: strictly local, equivariant, one edge at a time.

Every directed edge ``e = (i <- j)`` (centre ``i = dst``, neighbour ``j = src``, vector
``r_e = x_j - x_i``) carries a scalar track ``s_e`` and a tensor track ``T_e``; the energy
of atom ``i`` is a sum over its own edges, so only positions within one cutoff of an
atom matter (``n_hops = 1``, no feature exchange in the graph-parallel runtime)::

    x   = |r_e| / r_max                                   # float64 from here ...
    B   = [sinc(n x) n]_{n=1..N} * f_p(x)                 # Bessel basis, polynomial cutoff
    Y   = Y_l(r̂_e), l <= l_max                            # ... to here, then body dtype
    h   = [E_c(Z_i), E_n(Z_j)] * Linear(B)                # radial-chemical embedding
    h   = MLP_2body(h)
    T   = Y ⊙ W_T(h)                                      # per channel, per irrep weights
    s_0, w = Linear(h)                                    # scalars, environment weights
    for each layer t:
        env_i = Σ_{e' : dst = i} Y(e') ⊙ w(e') / sqrt(N_avg(Z_i))
        T     = TP_t(T, env_{dst(e)})                     # Clebsch–Gordan, path weights
        s_{t+1}, w = MLP_t([s_0 .. s_t, scalars(T)])
    ε_e = MLP_readout([s_0 .. s_L])
    E_i = scale(Z_i) Σ_{e : dst = i} ε_e / sqrt(2 N_avg(Z_i)) + shift(Z_i) + ZBL_i

This is the architecture of ``nequip-allegro`` 0.8 (its ``AllegroModel`` with the
two-body Bessel scalar embedding), so its models convert weight for weight
(:mod:`atomshard.models.allegro.convert`).
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models.allegro.config import AllegroConfig
from atomshard.models.allegro.layers import EdgeTensorProduct, ScalarMLP, tensor_track_irreps
from atomshard.models.allegro.zbl import zbl_edge_energies
from atomshard.models.base import Exchange, Potential, owned_rows

#: edges shorter than this (Å) are two atoms on top of each other: no model is defined
MIN_EDGE_LENGTH = 1e-4


def _scatter_sum(x: torch.Tensor, index: torch.Tensor, n: int, dim: int = 0) -> torch.Tensor:
    """``out[.., index[e], ..] += x[.., e, ..]`` along ``dim``, ``n`` long there (float32
    at least)."""
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    shape = list(x.shape)
    shape[dim] = n
    out = torch.zeros(shape, dtype=dtype, device=x.device)
    return out.index_add_(dim, index, x.to(dtype))


class AllegroPotential(Potential):
    """Allegro (``nequip-allegro`` 0.8's architecture); build with :meth:`from_config`.

    Attributes:
        config: the :class:`AllegroConfig` it was built from.
        sh_irreps: irreps of the edge spherical harmonics (``0e + 1o + 2e ...``).
        track_irreps: tensor-track irreps before and after each layer.
    """

    config_class = AllegroConfig
    needs_feature_exchange = False
    n_hops = 1
    z_to_index: torch.Tensor
    bessel_weights: torch.Tensor
    avg_norm: torch.Tensor
    energy_shift: torch.Tensor
    energy_scale: torch.Tensor
    zbl_z: torch.Tensor

    def __init__(self, config: AllegroConfig) -> None:
        super().__init__()
        self.config = config
        self.cutoff = config.cutoff
        self.atomic_numbers = tuple(config.species)
        n_species = len(config.species)
        f64 = torch.float64
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[list(config.species)] = torch.arange(n_species)
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        bessel = torch.arange(1, config.n_bessel + 1, dtype=f64)
        self.register_buffer("bessel_weights", bessel, persistent=False)
        self.sh_irreps = o3.Irreps.spherical_harmonics(config.l_max, p=-1)
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.sh_irreps, normalize=True, normalization="component"
        )
        #: component slices of the spherical harmonics, one per irrep
        self.sh_slices = [(sl.start, sl.stop) for sl in self.sh_irreps.slices()]
        n_irreps = len(self.sh_irreps)
        fwd = config.forward_normalize
        d, s, u = config.embed_dim, config.scalar_embed_dim, config.n_tensor
        body = config.torch_dtype

        # === two-body embedding ===
        self.centre_embed = nn.Parameter(torch.empty(n_species, d // 2, dtype=body).normal_())
        self.neighbour_embed = nn.Parameter(torch.empty(n_species, d // 2, dtype=body).normal_())
        self.basis_linear = ScalarMLP([config.n_bessel, d], None, forward_normalize=fwd)
        self.two_body = ScalarMLP(
            [d, *config.two_body_hidden, s], config.two_body_activation, forward_normalize=fwd
        )
        self.tensor_embed = ScalarMLP([s, n_irreps * u], None, forward_normalize=fwd)
        self.first_projection = ScalarMLP([s, config.n_scalar + n_irreps * u], None)

        # === Allegro layers ===
        self.track_irreps = tensor_track_irreps(
            self.sh_irreps, config.l_max, config.parity, config.n_layers
        )
        env_irreps = o3.Irreps([(1, ir) for _, ir in self.sh_irreps])
        self.products = nn.ModuleList()
        self.latents = nn.ModuleList()
        for t in range(config.n_layers):
            self.products.append(
                EdgeTensorProduct(
                    self.track_irreps[t], env_irreps, self.track_irreps[t + 1], u,
                    path_channel_coupling=config.path_channel_coupling,
                )
            )  # fmt: skip
            last = t == config.n_layers - 1
            # input: s_0 .. s_t (n_scalar each) and the track's scalars (one per channel)
            width_in = config.n_scalar * (t + 1) + u
            width_out = config.n_scalar + (0 if last else n_irreps * u)
            self.latents.append(
                ScalarMLP(
                    [width_in, *config.allegro_hidden, width_out],
                    config.allegro_activation,
                    forward_normalize=fwd,
                )
            )
        self.readout = ScalarMLP(
            [config.n_scalar * (config.n_layers + 1), *config.readout_hidden, 1],
            config.readout_activation,
            forward_normalize=fwd,
        )
        body_modules: list[nn.Module] = [self.basis_linear, self.two_body, self.tensor_embed]
        body_modules += [self.first_projection, self.products, self.latents, self.readout]
        for module in body_modules:
            module.to(body)

        # === per-species constants (float64) ===
        def per_species(values: tuple[float, ...] | float) -> torch.Tensor:
            v = torch.tensor(values, dtype=f64)
            return v.expand(n_species).clone() if v.numel() == 1 else v

        self.register_buffer(
            "avg_norm", per_species(config.avg_num_neighbors).rsqrt(), persistent=False
        )
        self.register_buffer("energy_shift", per_species(config.energy_shift), persistent=False)
        self.register_buffer("energy_scale", per_species(config.energy_scale), persistent=False)
        self.register_buffer("zbl_z", torch.tensor(config.species, dtype=f64), persistent=False)

    @classmethod
    def from_config(cls, config: AllegroConfig) -> AllegroPotential:
        """Build a randomly initialised model from ``config``."""
        return cls(config)

    @property
    def body_dtype(self) -> torch.dtype:
        return self.readout.weights[0].dtype

    def edge_geometry(
        self, edge_vec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float64 edge geometry: lengths, cutoff envelope, Bessel basis times envelope,
        spherical harmonics.

        Shapes:
            edge_vec: ``[n_edges, 3]`` float64 Å
            returns: ``[n_edges]``, ``[n_edges]``, ``[n_edges, n_bessel]``,
            ``[n_edges, (l_max + 1)^2]``, all float64
        """
        r = torch.linalg.vector_norm(edge_vec, dim=-1)
        x = r * (1.0 / self.cutoff)
        p = float(self.config.cutoff_p)
        env = 1.0 - ((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(x, p)
        env = env + (p * (p + 2.0)) * torch.pow(x, p + 1.0)
        env = env - (p * (p + 1.0) / 2.0) * torch.pow(x, p + 2.0)
        env = env * (x < 1.0)
        w = self.bessel_weights
        basis = torch.sinc(x.unsqueeze(-1) * w) * w * env.unsqueeze(-1)
        return r, env, basis, self.spherical_harmonics(edge_vec)

    def edge_energies(
        self,
        basis: torch.Tensor,
        sh: torch.Tensor,
        centre: torch.Tensor,
        type_c: torch.Tensor,
        type_n: torch.Tensor,
        centre_types: torch.Tensor,
    ) -> torch.Tensor:
        """Network energy of every edge (before the per-atom sum), float64.

        Shapes:
            basis: ``[n_edges, n_bessel]``, sh: ``[n_edges, dim_sh]`` (body dtype)
            centre: ``[n_edges]`` centre rows; type_c, type_n: species indices of each
            edge's centre and neighbour; centre_types: ``[n_centres]`` species indices of
            the centre rows; returns ``[n_edges]``
        """
        cfg = self.config
        u, n_scalar = cfg.n_tensor, cfg.n_scalar
        n_irreps = len(self.sh_irreps)
        n_e = basis.shape[0]
        types = torch.cat(
            (
                self.centre_embed.index_select(0, type_c),
                self.neighbour_embed.index_select(0, type_n),
            ),
            dim=-1,
        )
        h = self.two_body(types * self.basis_linear(basis))
        sh_e = sh.unsqueeze(1)  # [e, 1, dim_sh]

        def weighted(w: torch.Tensor) -> torch.Tensor:  # [e, u * n_irreps] -> [e, u, dim_sh]
            # one product per irrep: autograd keeps views of w and sh, not [e, u, dim_sh]
            w = w.reshape(n_e, u, n_irreps)
            parts = [
                w[:, :, k : k + 1] * sh_e[:, :, a:b] for k, (a, b) in enumerate(self.sh_slices)
            ]
            return torch.cat(parts, dim=2)

        tensor = weighted(self.tensor_embed(h))
        projection = self.first_projection(h)
        scalars = [projection[:, :n_scalar]]
        env_w = projection[:, n_scalar:]
        n_centres = centre_types.shape[0]
        norm = self.avg_norm.index_select(0, centre_types)[:, None, None]
        for t, (tp, latent) in enumerate(zip(self.products, self.latents, strict=True)):
            env = _scatter_sum(weighted(env_w), centre, n_centres)
            env = (env * norm.to(env.dtype)).to(sh.dtype)
            tensor = tp(tensor, env, centre)
            out = latent(torch.cat([*scalars, tensor[:, :, 0]], dim=-1))
            scalars.append(out[:, :n_scalar])
            if t < len(self.latents) - 1:
                env_w = out[:, n_scalar:]
        return self.readout(torch.cat(scalars, dim=-1)).squeeze(-1).to(torch.float64)

    def atomic_energies(
        self, graph: AtomicGraph, edge_vec: torch.Tensor, exchange: Exchange
    ) -> torch.Tensor:
        """Per-atom energies (eV, float64) of the owned atoms, from the edges into them
        (strictly local: ``exchange`` is never called).

        Shapes:
            edge_vec: ``[n_edges, 3]`` float64 Å
            returns: ``[n_owned]`` float64 eV
        """
        self.check_species(graph.species)
        n_own = owned_rows(exchange, graph.n_atoms)
        dst, src = graph.dst, graph.src
        vec = edge_vec
        if n_own < graph.n_atoms:  # only edges into owned atoms carry owned energy
            keep = torch.nonzero(dst < n_own).squeeze(1)
            dst, src, vec = (
                dst.index_select(0, keep),
                src.index_select(0, keep),
                vec.index_select(0, keep),
            )
        index = self.z_to_index.index_select(0, graph.species)
        type_c, type_n = index.index_select(0, dst), index.index_select(0, src)
        r, envelope, basis, sh = self.edge_geometry(vec)
        if r.numel() and float(r.detach().min()) < MIN_EDGE_LENGTH:
            k = int(torch.argmin(r.detach()))
            raise InputError(
                f"atoms {int(dst[k])} and {int(src[k])} are {float(r[k]):.2e} Å apart: two atoms "
                "on top of each other have no defined energy"
            )
        body = self.body_dtype
        own_index = index[:n_own]
        eps = self.edge_energies(basis.to(body), sh.to(body), dst, type_c, type_n, own_index)
        norm = self.avg_norm.index_select(0, own_index)
        e = _scatter_sum(eps, dst, n_own) * norm * (2.0**-0.5)
        e = torch.addcmul(self.energy_shift.index_select(0, own_index),
                          self.energy_scale.index_select(0, own_index), e)  # fmt: skip
        if self.config.zbl:
            zc, zn = self.zbl_z.index_select(0, type_c), self.zbl_z.index_select(0, type_n)
            e = e + _scatter_sum(zbl_edge_energies(r, zc, zn) * envelope, dst, n_own)
        if edge_vec.requires_grad and not e.requires_grad:
            e = e + 0.0 * edge_vec.sum()  # no edges: keep the energies on the geometry
        return e

    def activation_bytes_per_atom(self) -> int:
        """What a force evaluation keeps per atom (bytes): the per-edge activations autograd
        saves (two-body embedding and MLP, tensor track, environment, Allegro MLPs,
        readout, float64 geometry) times ``mean(avg_num_neighbors)`` edges per atom (the
        training data's mean where it was fitted; at least one)."""
        c = self.config
        u, s_emb, n_irr = c.n_tensor, c.scalar_embed_dim, len(self.sh_irreps)
        d_sh = self.sh_irreps.dim
        values = 2 * c.embed_dim + 2 * sum(c.two_body_hidden) + s_emb
        values += 3 * u * n_irr + 2 * u * d_sh + c.n_scalar
        for t in range(c.n_layers):
            values += 3 * u * d_sh + u * (self.track_irreps[t].dim + self.track_irreps[t + 1].dim)
            values += c.n_scalar * (t + 1) + u + 2 * sum(c.allegro_hidden)
            values += c.n_scalar + u * n_irr
        values += c.n_scalar * (c.n_layers + 1) + 2 * sum(c.readout_hidden)
        itemsize = torch.empty((), dtype=self.body_dtype).element_size()
        per_edge = values * itemsize + 8 * (16 + 2 * d_sh + c.n_bessel)
        neighbours = max(sum(c.avg_num_neighbors) / len(c.avg_num_neighbors), 1.0)  # type: ignore[arg-type]
        return int(per_edge * neighbours)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"species={c.species}, cutoff={c.cutoff} Å, l_max={c.l_max}, layers={c.n_layers}, "
            f"scalar={c.n_scalar}, tensor={c.n_tensor}, zbl={c.zbl}, dtype={c.dtype}"
        )
