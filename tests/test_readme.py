"""The README's "Library use" program runs as written and prints what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def library_example() -> tuple[str, str]:
    """The Python block of the "Library use" section, and the output the README promises."""
    section = README.read_text().split("## Library use", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    promised = re.search(r"It prints `([^`]+)`", section)
    assert code is not None and promised is not None
    return code.group(1), promised.group(1)


def test_library_example_runs_as_written(tmp_path: Path) -> None:
    code, promised = library_example()
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "RIPP_HOME": str(tmp_path / "pki")}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == promised
