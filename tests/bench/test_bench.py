"""atomshard.bench: every public name resolves, by name, to a function of its module (spawned
ranks unpickle them by module and name), and a serial timing run returns its figures."""

from __future__ import annotations

import importlib

import pytest

import atomshard.bench as bench
from atomshard.comm import NullCommunicator
from atomshard.graph import Structure
from atomshard.io.structures import builtin_structure


@pytest.mark.parametrize("name", bench.__all__)
def test_public_names_resolve(name):
    fn = getattr(bench, name)
    assert callable(fn)
    assert getattr(importlib.import_module(fn.__module__), fn.__qualname__) is fn
    assert fn.__module__.startswith("atomshard.bench.")


def test_unknown_name():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bench.nope  # noqa: B018


def test_time_exchange_serial():
    structure = Structure.from_ase(builtin_structure("quartz", (1, 1, 1)))
    out = bench.time_exchange(
        NullCommunicator(),
        structure=structure,
        cutoff=4.0,
        partition="lownn",
        widths=[4],
        transports=["auto"],
        repeats=1,
    )
    assert out["n_owned"] == structure.n_atoms and out["n_halo"] == 0
    (run,) = out["runs"]
    assert run["width"] == 4 and run["forward_s"] >= 0 and run["backward_s"] >= 0
    assert bench.peak_rss_mib() > 0
