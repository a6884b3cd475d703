"""parse_dtype: the one name -> torch.dtype conversion, with errors that name the value."""

from __future__ import annotations

import doctest

import pytest
import torch

import atomshard.utils.dtypes
from atomshard.errors import InputError
from atomshard.utils.dtypes import DTYPE_NAMES, parse_dtype


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_names_map_to_the_torch_dtype_of_that_name(name: str) -> None:
    assert parse_dtype(name) is getattr(torch, name)


def test_none_means_the_default() -> None:
    assert parse_dtype(None) is None


@pytest.mark.parametrize("bad", ["float", "Float64", "int64", "", "torch.float32"])
def test_unknown_name_is_an_input_error_naming_it(bad: str) -> None:
    with pytest.raises(InputError, match=f"--dtype {bad!r}"):
        parse_dtype(bad, what="--dtype")


def test_allowed_narrows_the_accepted_names() -> None:
    assert parse_dtype("float64", allowed=("float32", "float64")) is torch.float64
    with pytest.raises(InputError, match="'bfloat16': expected one of float32, float64"):
        parse_dtype("bfloat16", allowed=("float32", "float64"))


def test_docstring_examples() -> None:
    assert doctest.testmod(atomshard.utils.dtypes).failed == 0
