"""The words atomshard uses, defined once.

atom / node
    One row of ``positions``; ``n_atoms`` of them in a graph.
edge ``k = (src -> dst)``
    A directed pair of atoms closer than the cutoff. The message flows from ``src``
    into ``dst``; ``dst``'s owner owns the edge ("incoming-edge ownership"). Both
    directions of every pair are stored, and a pair that is a neighbour through several
    periodic images has one edge per image.
shift
    Integer image offset of an edge, ``[n_edges, 3]`` int64. The edge vector is
    ``r_k = positions[src] + shift_k @ cell - positions[dst]`` (Å), i.e. it points from
    the receiving atom to the (imaged) sending atom.
cell
    ``[3, 3]`` float64, Å; rows are the lattice vectors ``a``, ``b``, ``c``.
pbc
    ``[3]`` bool; which lattice directions are periodic.
species
    ``[n_atoms]`` int64 atomic numbers (``Z``). Models map them to their own type index.
system_idx
    ``[n_atoms]`` int64, which system of a batch an atom belongs to (never "batch").
rank / world_size
    A process of a distributed run and their number.
part
    A piece of a partition; ``part[i]`` is the part (rank) owning atom ``i``.
owned
    Atoms a rank is responsible for; their local indices are ``0 .. n_owned - 1``.
halo
    Remote atoms whose current features a rank needs because they are the ``src`` of an
    owned edge; one row per remote atom however many images of it are neighbours. Halo
    rows follow the owned rows, grouped by owning rank.
peer
    Another rank this rank exchanges halo rows with.
send[peer] / recv[peer]
    Local row indices packed for, and unpacked from, one peer.
exchange
    A callable ``x_local -> x_local`` that refreshes the halo rows of a per-atom tensor
    from their owners (identity when serial); its backward returns halo gradients home.

Units: Å, eV, eV/Å, eV/Å³ (stress), fs, amu. Stress follows ASE's sign convention,
``stress = (1/V) ∂E/∂ε`` for a symmetric strain ``ε``; pressure is ``-trace(stress)/3``.
"""
