"""numba's own compile of an audio kernel, alone in a warm process: the floor a code edit cannot beat.

No entry point, no bounds checks, no test run, no object file: only
``numba.njit`` on the patch's ``audio`` with its state's record type, the
way a hand-written numba program would compile it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = """
import json, sys, time
import numba
from numba import types
from compiler_bridge.abi import CTX_DTYPE
from compiler_bridge.state import StateLayout
texts = json.loads(open(sys.argv[1]).read())
times = []
for k, text in enumerate(texts):
    namespace = {}
    exec(compile(text, f"patch{k}.py", "exec"), namespace)
    state = numba.from_dtype(StateLayout.from_class(namespace.get("State")).dtype)
    signature = types.void(state, numba.from_dtype(CTX_DTYPE), types.float32[:, :], types.float32[:, ::1])
    t0 = time.perf_counter()
    numba.njit(signature, nogil=True, error_model="numpy")(namespace["audio"])
    times.append(time.perf_counter() - t0)
print(json.dumps(times[1:]))  # (the first warms numba up)
"""


def numba_floor_s(texts: list[str]) -> float:
    """The median time numba takes to compile the ``audio`` kernel of each of *texts* but the first
    (which warms it up), one after another in one fresh process."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(texts, f)
        f.flush()
        out = subprocess.run([sys.executable, "-c", SNIPPET, f.name], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(out.stderr)
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))
