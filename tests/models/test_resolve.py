"""``--model`` strings: n2p2 folders with explicit units, unknown names."""

from __future__ import annotations

import pytest

from atomshard.errors import InputError
from atomshard.models.resolve import resolve_model
from tests.conftest import shared_data


def test_n2p2_units_in_the_model_string():
    # DMABN_SCAN's input.nn is in Bohr/Hartree but says so nowhere: the string states it.
    folder = shared_data("n2p2", "DMABN_SCAN")
    plain = resolve_model(f"n2p2:{folder}")
    bohr = resolve_model(f"n2p2:{folder}@bohr,hartree")
    assert bohr.cutoff == pytest.approx(plain.cutoff * 0.529177210903)
    with pytest.raises(InputError, match="LENGTH,ENERGY"):
        resolve_model(f"n2p2:{folder}@bohr")


def test_unknown_model_is_named():
    with pytest.raises(InputError, match="no such checkpoint"):
        resolve_model("not-a-model.pt")
