"""The watch handlers' success lines are dropped; every other Kopf line is kept."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from hybridgpu.handlers.quiet import WATCH_HANDLERS, QuietWatchHandlers

HANDLERS = Path(__file__).resolve().parents[2] / "operator" / "hybridgpu" / "handlers"


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)


def test_only_the_success_lines_of_watch_handlers_are_dropped() -> None:
    quiet = QuietWatchHandlers()
    assert not quiet.filter(record(logging.INFO, "Handler 'observe_job' succeeded."))
    assert quiet.filter(record(logging.INFO, "Handler 'provider_changed' succeeded."))
    assert quiet.filter(record(logging.ERROR, "Handler 'observe_job' failed with an exception"))
    assert quiet.filter(record(logging.WARNING, "Handler 'observe_job' succeeded."))


def test_every_watch_handler_is_named() -> None:
    """A new ``@kopf.on.event`` handler is quiet too, or this fails."""
    found = set()
    for path in HANDLERS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in node.decorator_list:
                    target = deco.func if isinstance(deco, ast.Call) else deco
                    if ast.unparse(target) == "kopf.on.event":
                        found.add(node.name)
    assert found == WATCH_HANDLERS
