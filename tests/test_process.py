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
# small long-lived blocks (M_MMAP_MAX = 0 keeps every block on the heap).
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from atomshard.utils.process import configure_process, release_free_heap, resident_bytes
    configure_process()
    import torch
    kept, mb = [], 1 << 20
    release_free_heap(64 * mb)  # the first call only marks the resident size
    for _ in range(48):
        big = torch.ones(8 * mb // 4)
        kept.append(torch.ones(64 * 1024))
        del big
    before = resident_bytes()
    small = release_free_heap(1 << 40)
    trimmed = release_free_heap(64 * mb)
    print(json.dumps([before, resident_bytes(), small, trimmed, release_free_heap(64 * mb)]))
    """
)


@glibc
def test_release_free_heap_returns_the_holes_of_a_fragmented_heap():
    env = {k: v for k, v in os.environ.items() if k != "ATOMSHARD_KEEP_MALLOC"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    import json

    before, after, small, trimmed, again = json.loads(out.stdout.strip().splitlines()[-1])
    assert not small  # below the threshold: nothing done
    assert trimmed and before - after > 200 << 20, (before, after)  # ~384 MB of holes
    assert not again  # nothing has grown since


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
