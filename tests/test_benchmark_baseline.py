"""The capacity harness runs an earlier commit's code beside this tree (benchmarks/baseline.py).

The "kept up now / kept up at f22f135" ratio is only worth something if the comparison
stack really runs that commit's ``ripp_core``/``ripp_trio``: checked here with a real
export and real processes (slow: a few seconds of two-way calls over loopback UDP).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from benchmarks import baseline, read_line, reap, spawn, write_pki
from benchmarks.capacity import Stack, run_point

# The first commit with benchmarks/capacity.py's role processes as they are run today;
# any commit from f22f135 on would do.
COMMIT = baseline.BASELINE_COMMIT


def _need_history() -> None:
    """Skip where the checkout lacks the commit (an sdist); under CI that is a failure
    (clone with the full history, e.g. actions/checkout with fetch-depth: 0)."""
    try:
        baseline.resolve(COMMIT)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the benchmark baseline needs commit {COMMIT} in the checkout: {exc}")
        pytest.skip(f"not a git checkout holding {COMMIT}")


@pytest.mark.slow
def test_role_processes_import_the_exported_commit() -> None:
    _need_history()
    with baseline.source_tree(COMMIT) as tree:
        assert (tree / "ripp_core" / "__init__.py").exists()
        assert (tree / "benchmarks" / "capacity.py").exists()
        (tree / "whereami.py").write_text(
            "import benchmarks, ripp_core, ripp_trio\n"
            "print('AT', ripp_core.__file__, ripp_trio.__file__, benchmarks.__file__)\n"
        )
        process = spawn("whereami", root=tree)
        try:
            paths = read_line(process, "AT ", timeout=60).split()
        finally:
            reap(process, timeout=30)
        for path in paths:
            assert Path(path).is_relative_to(tree), paths
    assert not tree.exists(), "the export is removed afterwards"


@pytest.mark.slow
def test_a_capacity_point_runs_on_the_earlier_commit() -> None:
    _need_history()
    with baseline.source_tree(COMMIT) as tree, tempfile.TemporaryDirectory() as pki:
        write_pki(Path(pki))
        point = run_point(Stack("ripp@base", "ripp", root=tree), 2, 1.0, Path(pki))
    assert point["stack"] == "ripp@base"
    assert point["connected"] == 2
    # Frames flowed both ways (the kept-up verdict itself depends on the machine's load).
    assert point["c2s"]["received"] > 0 and point["s2c"]["received"] > 0, point


def test_an_unknown_commit_is_refused() -> None:
    _need_history()
    with pytest.raises(RuntimeError, match="not in the repository"):
        baseline.resolve("0" * 40)
