"""Export files (the same numbers as the model they came from, one-line errors) and the
plugin build (cache key, missing compiler or mpiexec, a plugin for another LAMMPS)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import ase
import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.lammps import build
from atomshard.lammps.export import load_export, read_export
from atomshard.models.base import compute_properties
from atomshard.models.checkpoint import load_model
from atomshard.models.resolve import resolve_model
from tests.lammps.lammps_cases import cells


def _props(model, atoms: ase.Atoms):
    p = compute_properties(model, AtomicGraph.from_ase(atoms, float(model.cutoff)))
    return float(p.energy), p.forces.numpy(), p.stress.numpy()


@pytest.mark.parametrize("name", ["nequip", "allegro", "bp"])
def test_export_gives_the_original_numbers(exports, name):
    model, deploy = load_export(exports[name])
    source = read_export(exports[name])
    if name == "bp":  # the n2p2 folder the export was written from
        assert set(source["n2p2"]["files"]) == {
            "input.nn",
            "scaling.data",
            "weights.001.data",
            "weights.008.data",
        }
        folder = exports[name].parent / "n2p2"
        original = resolve_model(f"n2p2:{folder}")
        shutil.rmtree(folder)  # the export needs no n2p2 files
        model = load_export(exports[name])[0]
        assert deploy.species == ("H", "O") and not deploy.needs_feature_exchange
        assert deploy.exchange_width == 0
    else:
        original = load_model(exports[name].parent / f"{name}.pt")
    atoms = cells()["triclinic"].atoms
    if name == "bp":
        atoms.numbers = np.where(atoms.numbers == 14, 1, 8)
    for got, want in zip(_props(model, atoms), _props(original, atoms)):
        np.testing.assert_array_equal(got, want)
    if name == "nequip":
        assert deploy.n_hops == 3 and deploy.needs_feature_exchange
        assert deploy.exchange_width > 0 and deploy.dtype == "float64"
        assert deploy.units == "metal" and deploy.cutoff == 3.5


def test_float32_export(exports):
    model, deploy = load_export(exports["nequip32"])
    assert deploy.dtype == "float32"
    assert model.config.dtype == "float32"


def test_not_an_export_is_one_line_error(exports, tmp_path):
    checkpoint = exports["nequip"].parent / "nequip.pt"  # a checkpoint, not an export
    with pytest.raises(InputError, match=r"nequip.pt' is not an atomshard export \(format"):
        load_export(checkpoint)
    text = tmp_path / "model.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"model.txt' is not an atomshard export"):
        load_export(text)
    with pytest.raises(InputError, match="does not exist"):
        load_export(tmp_path / "none.pt")


def test_export_command(exports, tmp_path, capsys):
    from atomshard.cli import main

    out = tmp_path / "out.pt"
    assert main(["export", str(exports["nequip"].parent / "nequip.pt"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pair_coeff * *" in printed and "O Si" in printed and "3 layer(s)" in printed
    assert load_export(out)[1].n_hops == 3
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2


def test_plugin_folder_follows_source_lammps_and_python(plugin, monkeypatch, tmp_path):
    tc = build.toolchain()
    here = build.plugin_dir(tc)
    assert plugin.parent == here and plugin.name.endswith("plugin.so")
    assert f"lammps-{tc.lammps_version}-py" in here.name
    assert build.plugin_dir(dataclasses.replace(tc, lammps_version="2099.1.1.0.0")) != here
    assert build.plugin_dir(dataclasses.replace(tc, python="/other/python")) != here
    for name in build.SOURCES:
        shutil.copy(build._source_dir() / name, tmp_path / name)
    with open(tmp_path / "pair_atomshard.cpp", "a") as f:
        f.write("// changed\n")
    monkeypatch.setattr(build, "_source_dir", lambda: tmp_path)
    assert build.plugin_dir(tc) != here
    assert build.plugin_path() == str(build.plugin_dir())


def test_env_command(plugin, capsys):
    from atomshard.cli import main

    assert main(["lammps", "env"]) == 0
    printed = capsys.readouterr().out
    assert f"export LAMMPS_PLUGIN_PATH={plugin.parent}" in printed
    assert "export LD_LIBRARY_PATH=" in printed


def test_no_compiler_or_mpiexec_is_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="no C\\+\\+ compiler"):
        build.compiler()
    tc = dataclasses.replace(build.toolchain(), mpiexec=None)
    monkeypatch.setattr(build, "toolchain", lambda: tc)
    with pytest.raises(InputError, match=r"no mpiexec .* to start 2 ranks"):
        build.lammps_command(tmp_path / "in.lmp", 2)
    argv, _ = build.lammps_command(tmp_path / "in.lmp", 1)  # one rank runs without it
    assert argv[0] == str(tc.lmp)


def test_plugin_for_another_lammps_says_how_to_rebuild(plugin, monkeypatch, tmp_path):
    tc = dataclasses.replace(build.toolchain(), lammps_version="2099.1.1.0.0")
    monkeypatch.setattr(build, "toolchain", lambda: tc)
    monkeypatch.setenv("ATOMSHARD_LAMMPS_PLUGIN_ROOT", str(tmp_path))
    other = build.build_plugin()
    argv, env = build.lammps_command(tmp_path / "in.lmp", 1, ["-nocite"])
    (tmp_path / "in.lmp").write_text(f"plugin load {other}\nunits metal\npair_style atomshard\n")
    env["LAMMPS_PLUGIN_PATH"] = ""
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "built for LAMMPS 20990101 but runs in LAMMPS 20250722" in done.stdout
    assert "atomshard lammps build" in done.stdout
    assert "Unrecognized pair style 'atomshard'" in done.stdout


def test_build_is_cached(plugin):
    stamp = plugin.stat().st_mtime_ns
    assert build.build_plugin() == plugin and plugin.stat().st_mtime_ns == stamp
