"""An earlier commit of this repository as a fixed comparison point in the same run.

Capacity improvements are claimed as ratios against the code before them ("at least double
against today's code", issue 12). On a shared machine only a ratio measured in one run,
points interleaved, means anything, so the harness runs the role processes of an earlier
commit beside the current tree: :func:`source_tree` exports that commit's files
(``git archive``, nothing in the repository's own state changes: no worktree entry, no
lock, nothing to prune if the run is killed) into a temporary directory, and
:func:`benchmarks.spawn` runs ``python -m benchmarks.capacity`` from there with the same
interpreter and dependencies. The earlier tree's own ``benchmarks/capacity.py`` drives its
own ``ripp_trio``, so the comparison point measures exactly that commit's code, load
generator included.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The landed code when issue 12's capacity work began: the comparison point by default.
BASELINE_COMMIT = "f22f135"


def resolve(commit: str) -> str:
    """The full hash of ``commit`` in this repository (raises ``RuntimeError`` if unknown)."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"commit {commit!r} is not in the repository at {ROOT}")
    return done.stdout.strip()


@contextlib.contextmanager
def source_tree(commit: str = BASELINE_COMMIT) -> Iterator[Path]:
    """The files of ``commit``, exported to a temporary directory for the run's length."""
    full = resolve(commit)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", full],
        cwd=ROOT, capture_output=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"ripp-{full[:7]}-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def same_code(commit: str, paths: tuple[str, ...] = ("ripp_core", "ripp_trio")) -> bool:
    """Whether this working tree's ``paths`` are exactly ``commit``'s (then a capacity
    ratio against ``commit`` measures only the harness's noise)."""
    done = subprocess.run(
        ["git", "diff", "--quiet", resolve(commit), "--", *paths],
        cwd=ROOT, capture_output=True, timeout=60,
    )  # fmt: skip
    return done.returncode == 0
