"""The ``atomshard`` command: one program, small lazily imported subcommand modules.

Each subcommand lives in ``atomshard.commands.<name>`` and defines
``add_arguments(parser)`` and ``run(args) -> int``. This module only parses argv; the
command modules turn the namespace into library calls (library code never sees it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help). Modules are imported only when chosen.
COMMANDS: dict[str, tuple[str, str]] = {
    "md": ("atomshard.commands.md", "run molecular dynamics (NVE, Langevin, Nosé-Hoover)"),
    "minimize": ("atomshard.commands.minimize", "relax positions (and the cell) with FIRE or CG"),
    "eval": ("atomshard.commands.eval", "energy, forces, stress for every frame of a file"),
    "convert": ("atomshard.commands.convert", "convert a SevenNet or nequip-allegro checkpoint"),
    "data": ("atomshard.commands.data", "make Hamiltonian training data (data pyscf ...)"),
    "train": ("atomshard.commands.train", "train a potential or Hamiltonian model (YAML config)"),
    "errors": ("atomshard.commands.errors", "MAE/RMSE of a potential on a labelled dataset"),
    "predict": ("atomshard.commands.predict", "predict Hamiltonian blocks, errors and plots"),
    "info": ("atomshard.commands.info", "describe an atomshard checkpoint"),
    "partition": ("atomshard.commands.partition", "partition a graph; compare Low-NN, METIS, grid"),
    "export": ("atomshard.commands.export", "write a model as one file for LAMMPS"),
    "lammps": ("atomshard.commands.lammps", "LAMMPS plugin: lammps build|env|run (docs/lammps.md)"),
}
#: deprecated subcommand name -> its new name; each works as the new one, with a note on
#: stderr, for one release.
DEPRECATED_COMMANDS: dict[str, str] = {"evaluate": "errors"}
#: ``--allocator`` choices; ``auto`` (the default) is tcmalloc where it is installed, else
#: glibc (tuned by :func:`~atomshard.utils.process.configure_process`). The numbers do not
#: depend on it; speed and memory of large systems do (docs/performance.md).
ALLOCATOR_CHOICES = ("auto", "glibc", "tcmalloc", "jemalloc")
DEFAULT_ALLOCATOR = "auto"


def _allocator_choice(argv: list[str]) -> str:
    """The ``--allocator`` value given before the command name (else the default)."""
    for k, arg in enumerate(argv):
        if arg.startswith("--allocator="):
            return arg.split("=", 1)[1]
        if arg == "--allocator" and k + 1 < len(argv):
            return argv[k + 1]
        if not arg.startswith("-"):
            break
    return DEFAULT_ALLOCATOR


def _command_name(argv: list[str]) -> str | None:
    """The subcommand: the first word that is neither an option nor ``--allocator``'s value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--allocator":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atomshard",
        description="Message-passing neural-network models of atoms, serial or graph-parallel.",
    )
    from atomshard import __version__

    parser.add_argument("--version", action="version", version=f"atomshard {__version__}")
    parser.add_argument(
        "--allocator",
        choices=ALLOCATOR_CHOICES,
        default=DEFAULT_ALLOCATOR,
        help="memory allocator: auto (the default: tcmalloc where installed, else glibc), "
        "glibc (tuned), tcmalloc or jemalloc (the command re-runs itself with it preloaded; "
        "tcmalloc is much faster and leaner on large systems: docs/performance.md)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _command_name(argv)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    for old, new in DEPRECATED_COMMANDS.items():
        p = sub.add_parser(old, help=f"deprecated name of '{new}'")
        if old == chosen:
            importlib.import_module(COMMANDS[new][0]).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from atomshard.commands import join_repeat_values
    from atomshard.errors import AtomshardError
    from atomshard.utils.process import configure_process, exec_with_allocator

    process_argv = argv is None  # only a real command line may re-run itself
    argv = sys.argv[1:] if argv is None else list(argv)
    allocator = _allocator_choice(argv)
    if process_argv and allocator in ALLOCATOR_CHOICES:
        try:
            lib = exec_with_allocator(allocator, argv)  # returns in the re-run process
        except FileNotFoundError as exc:
            print(f"atomshard: error: {exc}", file=sys.stderr)
            return 2
        if lib is not None and allocator != "auto":
            print(f"atomshard: memory allocator {allocator} ({lib})", file=sys.stderr)
    configure_process()  # before torch is imported by any subcommand
    argv = join_repeat_values(argv)  # --repeat A B C -> one value
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command in DEPRECATED_COMMANDS:
        new = DEPRECATED_COMMANDS[args.command]
        print(f"atomshard: '{args.command}' is deprecated, use '{new}'", file=sys.stderr)
        args.command = new
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except AtomshardError as exc:
        print(f"atomshard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"atomshard {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
