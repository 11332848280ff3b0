"""One room per responsibility, kept so: no module of the project's code over 600 lines, no function over 80."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# The project's own code; tests have their own shape (long parametrised tables).
CODE = ("app.py", "chalicelib", "devstack", "feed_bridge", "ops", "bench", "chaos", "infra")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def python_files() -> list[Path]:
    files: list[Path] = []
    for name in CODE:
        path = REPO / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return [file for file in files if "build" not in file.relative_to(REPO).parts]


def test_there_is_code_to_measure() -> None:
    files = python_files()
    assert REPO / "app.py" in files
    assert any(file.is_relative_to(REPO / "chalicelib") for file in files)


def test_no_module_is_over_600_lines() -> None:
    sizes = {str(file.relative_to(REPO)): len(file.read_text(encoding="utf-8").splitlines()) for file in python_files()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_no_function_is_over_80_lines() -> None:
    long_functions = {}
    for file in python_files():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                # From the decorators on: they are part of what one reads as the function.
                first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions[f"{file.relative_to(REPO)}:{node.lineno} {node.name}"] = length
    assert long_functions == {}
