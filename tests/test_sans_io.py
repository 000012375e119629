"""ripp_core stays sans-IO (C1): no sockets, event loops, threads or clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "ripp_core"
FORBIDDEN_MODULES = {
    "socket",
    "asyncio",
    "trio",
    "threading",
    "multiprocessing",
    "selectors",
    "select",
    "subprocess",
    "time",
    "concurrent",
    "signal",
    "ssl",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "sleep", "monotonic", "perf_counter", "urandom"}
SIP = CORE.parent / "ripp_sip"
# ripp_sip's core is sans-IO too; its Trio driver (trio_gateway.py) is the one exception.
SOURCES = sorted(CORE.rglob("*.py")) + sorted(
    p for p in SIP.glob("*.py") if p.name != "trio_gateway.py"
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE.parent)))
def test_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}()"
            )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "open", f"{path.name}:{node.lineno} opens a file"


def test_scan_covers_the_binding_and_the_call() -> None:
    names = {p.name for p in SOURCES}
    assert {"_h3.py", "_call.py", "_sender.py", "_network.py"} <= names
    assert {"_endpoint.py", "_transaction.py", "_sdp.py", "_rtp.py", "_mapping.py"} <= names
