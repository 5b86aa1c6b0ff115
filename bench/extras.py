"""What a bench needs beyond the project itself: said in one line, exit status 2, before it starts."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# module -> the package that brings it (the bench extra installs them all)
PACKAGES = {"jack": "JACK-Client", "link": "LinkPython-extern", "aalink": "aalink"}


def require(*modules: str) -> None:
    """Exit with status 2 and one line saying what to install when a module is missing."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        names = ", ".join(PACKAGES.get(m, m) for m in missing)
        print(f"{Path(sys.argv[0]).name} needs {names}: pip install -e '.[bench]'", file=sys.stderr)
        sys.exit(2)
