"""Shared by the benchmark scripts: measure Mulligan as an installed copy runs."""

from __future__ import annotations

import compileall
import os

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def byte_compile() -> None:
    """Byte-compile the package first, as `pip install` does for an installed copy.

    The development install is editable, and with PYTHONDONTWRITEBYTECODE set (common in
    containers) every command would otherwise compile its modules again at start-up."""
    compileall.compile_dir(SRC, quiet=2)
