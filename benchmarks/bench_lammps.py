"""LAMMPS + pair_style atomshard against ``atomshard md``: the same model, structure and MD.

NVE from 300 K (dt 1 fs, skin 1 Å, neighbour lists checked every step) of α-quartz with
SevenNet-0 in its own dtype, on 1 and 2 ranks × ``--threads`` threads, in interleaved
rounds. Per-step time: ``atomshard md``'s median step time
(``MDResult.median_step_seconds``); for LAMMPS the same, the median of the step-to-step
differences of the elapsed time (``thermo 1``, keyword ``cpu``) of a second ``run`` (a
first short ``run`` pays the start-up: model load, first kernels). CPU time per step (what
a box shared with other jobs barely moves, unlike the wall time): LAMMPS's loop time of the
timed ``run`` times its "% CPU use" over its steps (the mean over ranks), and the mean of
``atomshard md``'s per-step process CPU seconds (``MDResult.step_cpu_seconds``, rank 0)
over the same number of last steps. Memory: the
largest RSS any one process of the run reached (the ranks, sampled every 0.1 s with
psutil over the whole process tree). Writes ``bench_lammps.json`` and
``bench_lammps.png``.

``--control`` (with ranks 1 and 2) adds, in every round, two independent 1-rank LAMMPS runs
of half the structure (the repeat halved along the longest cell vector, where LAMMPS cuts
its 2-rank decomposition) started together: the same work per process as a 2-rank run
with no communication between them. ``two_process_ceiling`` (1-rank time over twice
theirs) is what two processes sharing this machine (memory bandwidth, caches, the
hypervisor) can reach at all; ``lammps_2_over_half_pair`` what the decomposition and the
ghost exchange cost on top of it.

    python benchmarks/bench_lammps.py --repeat 4x4x4 --steps 20 --ranks 1 2   # 576 atoms
    python benchmarks/bench_lammps.py --repeat 8x8x8 --steps 10 --ranks 1 2   # 4,608 atoms
    python benchmarks/bench_lammps.py --repeat 8x8x8 --steps 5 --ranks 1 2 --control
    python benchmarks/bench_lammps.py --smoke
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LAMMPS_INPUT = """units metal
atom_style atomic
atom_modify map array
read_data {data}
pair_style atomshard
pair_coeff * * {model} {elements}
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
timestep 0.001
velocity all create {temperature} 7 loop geom
fix 1 all nve
thermo 1
thermo_style custom step cpu
thermo_modify format float %.9f
run {warmup}
run {steps}
"""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sevennet-0")
    parser.add_argument("--structure", default="quartz")
    parser.add_argument("--repeat", default="4x4x4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="LAMMPS steps before timing")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="threads per rank")
    parser.add_argument("--out", default="bench-out/lammps")
    parser.add_argument("--smoke", action="store_true", help="9 atoms, 2 steps, 1 rank, 1 round")
    parser.add_argument(
        "--control",
        action="store_true",
        help="also two concurrent 1-rank runs of half the structure (the 2-process ceiling)",
    )
    parser.add_argument("--atomshard-run", help=argparse.SUPPRESS)  # internal: one md run
    args = parser.parse_args(argv)
    if args.atomshard_run:
        return _atomshard_run(json.loads(args.atomshard_run))
    if args.smoke:
        args.repeat, args.steps, args.rounds, args.warmup, args.ranks = "1x1x1", 2, 1, 1, [1]

    from atomshard.commands import parse_repeat
    from atomshard.io import read_structures
    from atomshard.lammps.build import build_plugin, lammps_command
    from atomshard.lammps.export import export_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build_plugin()
    repeat = parse_repeat(args.repeat)
    atoms = read_structures(args.structure, repeat=repeat)[0]
    control = args.control and 1 in args.ranks and 2 in args.ranks
    half_repeat = _halved(repeat, atoms.cell.lengths()) if control else None
    if control and half_repeat is None:
        raise SystemExit(f"--control: no even repeat factor in {args.repeat} to halve")
    elements = sorted(set(atoms.get_chemical_symbols()))
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    rss: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        model_file = scratch / "model.pt"
        export_model(args.model, model_file)
        data = scratch / "structure.data"
        import ase.io

        ase.io.write(data, atoms, format="lammps-data", specorder=elements, masses=True)
        script = scratch / "in.lmp"
        text = LAMMPS_INPUT.format(
            data=data, model=model_file, elements=" ".join(elements),
            temperature=args.temperature, steps=args.steps, warmup=args.warmup,
        )  # fmt: skip
        script.write_text(text)
        if half_repeat is not None:
            half = read_structures(args.structure, repeat=half_repeat)[0]
            half_data = scratch / "half.data"
            ase.io.write(half_data, half, format="lammps-data", specorder=elements, masses=True)
            half_script = scratch / "half.lmp"
            half_script.write_text(text.replace(str(data), str(half_data)))
        for round_ in range(args.rounds):
            if half_repeat is not None:
                pair = []
                for k in range(2):
                    argv_h, env_h = lammps_command(
                        half_script, 1, ["-log", str(scratch / f"half{k}.lammps")]
                    )
                    env_h["OMP_NUM_THREADS"] = str(args.threads)
                    pair.append((argv_h, env_h))
                steps_h = [_median_step(o) for o in _run_together(pair, cwd=scratch)]
                times.setdefault("lammps-half-pair", []).append(statistics.fmean(steps_h))
                print(
                    f"round {round_}, two concurrent 1-rank LAMMPS runs of half the structure: "
                    + ", ".join(f"{1e3 * t:.1f}" for t in steps_h)
                    + " ms/step",
                    flush=True,
                )
            for n in args.ranks:
                argv_l, env = lammps_command(script, n, ["-log", str(scratch / "log.lammps")])
                env["OMP_NUM_THREADS"] = str(args.threads)
                stdout, peak = _run_sampled(argv_l, env=env, cwd=scratch)
                _record(times, rss, f"lammps-{n}", _median_step(stdout), peak)
                cpu.setdefault(f"lammps-{n}", []).append(_loop_cpu_per_step(stdout))
                job = {
                    "structure": args.structure, "repeat": args.repeat, "model": args.model,
                    "steps": args.steps + args.warmup, "temperature": args.temperature,
                    "ranks": n, "threads": args.threads,
                    "output": str(scratch / f"md-{n}-{round_}"),
                }  # fmt: skip
                argv_a = [sys.executable, __file__, "--atomshard-run", json.dumps(job)]
                stdout, peak = _run_sampled(argv_a, env=dict(os.environ), cwd=scratch)
                md = json.loads(stdout.strip().splitlines()[-1])
                _record(times, rss, f"atomshard-{n}", md["median_step_seconds"], peak)
                cpu.setdefault(f"atomshard-{n}", []).append(
                    statistics.fmean(md["step_cpu_seconds"][-args.steps :])
                )
                print(
                    f"round {round_}, {n} rank(s): LAMMPS {times[f'lammps-{n}'][-1] * 1e3:.1f} "
                    f"ms/step ({cpu[f'lammps-{n}'][-1] * 1e3:.1f} CPU-ms), atomshard md "
                    f"{times[f'atomshard-{n}'][-1] * 1e3:.1f} ms/step "
                    f"({cpu[f'atomshard-{n}'][-1] * 1e3:.1f} CPU-ms)",
                    flush=True,
                )
    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    report = {
        "benchmark": "bench_lammps",
        "n_atoms": len(atoms),
        "model": args.model,
        "structure": args.structure,
        "repeat": args.repeat,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads_per_rank": args.threads,
        "seconds_per_step": median,
        "all_rounds": times,
        "cpu_seconds_per_step": median_cpu,
        "all_rounds_cpu": cpu,
        "lammps_over_atomshard_cpu": {
            n: median_cpu[f"lammps-{n}"] / median_cpu[f"atomshard-{n}"] - 1.0 for n in args.ranks
        },
        "peak_rss_mb_largest_process": {k: max(v) for k, v in rss.items()},
        "lammps_over_atomshard": {
            n: median[f"lammps-{n}"] / median[f"atomshard-{n}"] - 1.0 for n in args.ranks
        },
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    if 1 in args.ranks and 2 in args.ranks:
        report["efficiency_2_ranks"] = {
            e: median[f"{e}-1"] / (2 * median[f"{e}-2"]) for e in ("lammps", "atomshard")
        }
    if control:
        half_pair = median.pop("lammps-half-pair")
        report["half_repeat"] = "x".join(map(str, half_repeat or ()))
        report["half_pair_seconds_per_step"] = half_pair
        report["two_process_ceiling"] = median["lammps-1"] / (2 * half_pair)
        report["lammps_2_over_half_pair"] = median["lammps-2"] / half_pair - 1.0
        print(
            f"control: two concurrent half runs {half_pair * 1e3:.1f} ms/step; 2-process "
            f"ceiling {100 * report['two_process_ceiling']:.1f} % (LAMMPS 2 ranks reach "
            f"{100 * report['efficiency_2_ranks']['lammps']:.1f} %, "
            f"{100 * report['lammps_2_over_half_pair']:+.1f} % over the half pair)"
        )
    for n in args.ranks:
        print(
            f"{n} rank(s): LAMMPS {median[f'lammps-{n}'] * 1e3:.1f} ms/step "
            f"({report['peak_rss_mb_largest_process'][f'lammps-{n}']:.0f} MB/rank), atomshard md "
            f"{median[f'atomshard-{n}'] * 1e3:.1f} ms/step "
            f"({report['peak_rss_mb_largest_process'][f'atomshard-{n}']:.0f} MB/rank): LAMMPS "
            f"{100 * report['lammps_over_atomshard'][n]:+.1f} % (CPU per step "
            f"{100 * report['lammps_over_atomshard_cpu'][n]:+.1f} %)"
        )
    (out / "bench_lammps.json").write_text(json.dumps(report, indent=2))
    _plot(out / "bench_lammps.png", median, report)
    return report


def _run_sampled(argv: list[str], *, env: dict, cwd: Path) -> tuple[str, float]:
    """Run ``argv``; its stdout and the largest RSS (MB) any process of its tree reached."""
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    peak = max(peak, p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        if proc.returncode != 0:
            raise SystemExit(f"{argv[0]} failed:\n{stdout[-3000:]}{err.read()[-3000:]}")
    return stdout, peak / 2**20


def _halved(repeat: tuple[int, int, int], lengths) -> tuple[int, int, int] | None:  # type: ignore[no-untyped-def]
    """``repeat`` with the factor of the longest cell vector (of those with an even factor)
    halved; None when no factor is even."""
    even = [a for a in range(3) if repeat[a] % 2 == 0]
    if not even:
        return None
    axis = max(even, key=lambda a: float(lengths[a]))
    out = list(repeat)
    out[axis] //= 2
    return (out[0], out[1], out[2])


def _run_together(jobs: list[tuple[list[str], dict]], *, cwd: Path) -> list[str]:
    """Start every ``(argv, env)`` at once, wait for all; their stdouts."""
    files = [tempfile.TemporaryFile("w+") for _ in jobs]
    try:
        procs = [
            subprocess.Popen(argv, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, text=True)
            for (argv, env), f in zip(jobs, files)
        ]
        outs = []
        for (argv, _), proc, f in zip(jobs, procs, files):
            proc.wait()
            f.seek(0)
            text = f.read()
            if proc.returncode != 0:
                raise SystemExit(f"{argv[0]} failed:\n{text[-3000:]}")
            outs.append(text)
        return outs
    finally:
        for f in files:
            f.close()


def _median_step(stdout: str) -> float:
    """The median step time of the last ``run`` of a LAMMPS log (``thermo 1`` with the
    elapsed ``cpu`` time: wall seconds since the run started)."""
    block = stdout.split("Step")[-1].split("Loop time")[0]
    elapsed = [
        float(words[1])
        for words in (line.split() for line in block.strip().splitlines()[1:])
        if len(words) == 2 and words[0].isdigit()
    ]
    return statistics.median(b - a for a, b in itertools.pairwise(elapsed))


def _loop_cpu_per_step(stdout: str) -> float:
    """CPU seconds per step and rank of the last ``run`` of a LAMMPS log: its loop time
    times its "% CPU use" (the mean over ranks), over its steps."""
    tail = stdout.split("Loop time of")[-1]
    words = tail.split()
    loop, steps = float(words[0]), int(words[words.index("for") + 1])
    percent = float(tail.split("% CPU use")[0].split()[-1])
    return loop * percent / 100.0 / steps


def _record(times: dict, rss: dict, key: str, step: float, peak_mb: float) -> None:
    times.setdefault(key, []).append(step)
    rss.setdefault(key, []).append(peak_mb)


def _atomshard_run(job: dict) -> dict:
    """One ``atomshard md`` NVE run (in a process of its own, for its peak RSS); prints
    the median step time as JSON."""
    from atomshard.commands import parse_repeat
    from atomshard.md import MDConfig, run_md_on_ranks
    from atomshard.utils.process import configure_process

    configure_process(job["threads"])
    config = MDConfig(
        structure=job["structure"], repeat=parse_repeat(job["repeat"]), model=job["model"],
        ensemble="nve", steps=job["steps"], dt=1.0, temperature=job["temperature"],
        skin=1.0, traj_every=0, restart_every=0, output=job["output"],
    )  # fmt: skip
    result = run_md_on_ranks(config, job["ranks"], progress=False, threads_per_rank=job["threads"])
    assert result is not None
    report = {
        "median_step_seconds": result.median_step_seconds,
        "step_cpu_seconds": list(result.step_cpu_seconds),
    }
    print(json.dumps(report))
    return report


def _plot(path: Path, median: dict, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted(median)
    ax.bar(
        keys,
        [1e3 * median[k] for k in keys],
        color=["tab:blue" if k.startswith("lammps") else "tab:orange" for k in keys],
    )
    ax.set_ylabel("ms per step (median of rounds)")
    ax.set_title(f"{report['n_atoms']} atoms, {report['model']}, NVE")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
