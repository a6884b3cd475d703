"""Process settings: the heap trim that keeps a fragmented glibc heap from staying resident."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from atomshard.utils import process

glibc = pytest.mark.skipif(
    process.free_heap_bytes() is None or process.resident_bytes() == 0,
    reason="needs glibc's mallinfo2/malloc_trim and /proc/self/statm",
)

# A fragmented heap, as the chunked convolution leaves it: big temporaries freed between
# small long-lived blocks (M_MMAP_MAX = 0 keeps every block on the heap). All the big blocks
# are alive at once before they are freed, so the holes exist whatever glibc's reuse policy
# (allocating and freeing one at a time lets some glibc builds reuse a single hole).
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from atomshard.utils.process import (
        configure_process, free_heap_bytes, release_free_heap, resident_bytes,
    )
    configure_process()
    import torch
    kept, bigs, mb = [], [], 1 << 20
    release_free_heap(64 * mb)  # the first call only marks the resident size
    start = resident_bytes()
    for _ in range(48):
        bigs.append(torch.ones(8 * mb // 4))
        kept.append(torch.ones(64 * 1024))
    live = resident_bytes()
    del bigs
    before, free = resident_bytes(), free_heap_bytes()
    small = release_free_heap(1 << 40)
    trimmed = release_free_heap(64 * mb)
    after = resident_bytes()
    again = release_free_heap(64 * mb)
    print(json.dumps(dict(start=start, live=live, before=before, free=free, small=small,
                          trimmed=trimmed, after=after, again=again)))
    """
)


@glibc
def test_release_free_heap_returns_the_holes_of_a_fragmented_heap():
    # glibc's own heap: no kept-malloc switch, no preloaded allocator
    drop = ("ATOMSHARD_KEEP_MALLOC", "LD_PRELOAD", "ATOMSHARD_ALLOCATOR_PRELOADED")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    import json

    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["live"] - r["start"] < 300 << 20:
        pytest.skip(f"this system's /proc/self/statm does not count 384 MB of live tensors: {r}")
    assert r["free"] > 300 << 20, r  # the 48 freed 8 MB blocks are holes in the heap
    assert r["before"] - r["start"] > 300 << 20, r  # ... and they stay resident
    assert not r["small"], r  # below the threshold: nothing done
    assert r["trimmed"] and r["before"] - r["after"] > 300 << 20, r  # ~384 MB handed back
    assert not r["again"], r  # nothing has grown since


@glibc
def test_release_free_heap_respects_keep_malloc(monkeypatch):
    monkeypatch.setenv("ATOMSHARD_KEEP_MALLOC", "1")
    assert process.release_free_heap(0) is False


def test_allocator_choice_is_read_before_the_command():
    from atomshard.cli import DEFAULT_ALLOCATOR, _allocator_choice

    assert _allocator_choice(["--allocator", "tcmalloc", "md", "x.yaml"]) == "tcmalloc"
    assert _allocator_choice(["--allocator=jemalloc", "eval"]) == "jemalloc"
    assert _allocator_choice(["md", "--allocator", "tcmalloc"]) == DEFAULT_ALLOCATOR
    assert _allocator_choice([]) == DEFAULT_ALLOCATOR


def test_exec_with_allocator_errors_and_no_op_cases(monkeypatch):
    monkeypatch.delenv("ATOMSHARD_ALLOCATOR_PRELOADED", raising=False)
    assert process.exec_with_allocator("glibc", []) is None
    with pytest.raises(ValueError, match="unknown allocator 'ptmalloc9'"):
        process.exec_with_allocator("ptmalloc9", [])
    monkeypatch.setattr(process, "find_allocator", lambda name: None)
    with pytest.raises(FileNotFoundError, match="install libtcmalloc-minimal4"):
        process.exec_with_allocator("tcmalloc", [])
    # claimed preloaded but not in the process: an error, not a silent glibc run
    monkeypatch.setenv("ATOMSHARD_ALLOCATOR_PRELOADED", "libnotthere.so.1")
    with pytest.raises(FileNotFoundError, match="is not loaded"):
        process.exec_with_allocator("tcmalloc", [])


@pytest.mark.skipif(
    process.find_allocator("tcmalloc") is None, reason="tcmalloc (libtcmalloc-minimal4) absent"
)
def test_cli_reruns_itself_with_tcmalloc_preloaded():
    """The command line re-runs itself with tcmalloc preloaded and says so; in-process calls
    of main() (as the other tests make them) never re-run."""
    env = {k: v for k, v in os.environ.items() if k != "ATOMSHARD_ALLOCATOR_PRELOADED"}
    code = (
        "import sys; from atomshard.cli import main; "
        "sys.argv[1:] = ['--allocator', 'tcmalloc', '--version']; sys.exit(main())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "atomshard " in out.stdout
    assert "memory allocator tcmalloc (" in out.stderr  # printed by the re-run, once loaded


def test_command_options_are_read_after_an_allocator_choice(capsys):
    """``atomshard --allocator glibc md --steps ...``: the word after --allocator is its value,
    not the command, so the command's own options are known."""
    from atomshard.cli import _command_name, build_parser

    assert _command_name(["--allocator", "glibc", "md", "--steps", "3"]) == "md"
    assert _command_name(["--allocator=glibc", "eval"]) == "eval"
    args = build_parser(["--allocator", "glibc", "md"]).parse_args(
        ["--allocator", "glibc", "md", "--steps", "3"]
    )
    assert args.command == "md" and args.steps == 3


def test_passive_waits_sets_the_policy_for_children_and_restores_the_parent(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with process.passive_waits():
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert child.stdout.strip() == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ
    with process.passive_waits(on=False):
        assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice is kept
    with process.passive_waits():
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


# a fresh interpreter: the ranks fork from a server that starts with the first group
_RANKS_SCRIPT = textwrap.dedent(
    """
    import os
    from atomshard.comm import LocalGroup
    from atomshard.utils.process import configure_process

    def policy(comm):
        return os.environ.get("OMP_WAIT_POLICY")

    if __name__ == "__main__":
        configure_process()
        with LocalGroup(2, threads_per_rank=1) as group:
            print(group.run(policy), os.environ.get("OMP_WAIT_POLICY"))
    """
)


def test_ranks_of_a_local_group_wait_passively_and_a_single_process_does_not(tmp_path):
    # ranks share the cores: their OpenMP threads sleep between parallel regions; the
    # parent (one process) keeps the runtime's default, which the CLI no longer overrides
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=180
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['PASSIVE', 'PASSIVE'] None"


def _mapped_with_a_big_tensor(comm) -> int | None:
    import torch

    big = torch.ones(16 << 20)  # 64 MB: mmap'ed by glibc's default settings
    mapped = process.mapped_bytes()
    del big
    return mapped


@glibc
def test_ranks_keep_big_blocks_on_the_heap_as_the_launching_process_does():
    # the ranks fork from a fresh forkserver interpreter, not from the launching process:
    # without the allocator settings there, every large temporary of a step was mmap'ed
    # and unmapped anew (2-rank MD of 576-atom quartz ran 26 % slower)
    if os.environ.get("ATOMSHARD_KEEP_MALLOC") is not None or os.environ.get("LD_PRELOAD"):
        pytest.skip("glibc's heap settings are left alone in this environment")
    from atomshard.comm import LocalGroup

    with LocalGroup(2, timeout_s=60, threads_per_rank=1) as group:
        mapped = group.run(_mapped_with_a_big_tensor)
    assert all(m is not None and m < 16 << 20 for m in mapped), mapped
