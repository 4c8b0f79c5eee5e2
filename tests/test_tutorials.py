"""Run every gallery tutorial (``examples/plot_*.py``) as CI does.

Each script runs in its own Python process (``runpy``) with the Agg backend, the CPU only
and a temporary working directory, so files it writes stay out of the checkout.  The test
fails when the script raises or exits non-zero; the script's own asserts are its checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))

RUNNER = (
    "import runpy, sys\n"
    "import matplotlib\n"
    "matplotlib.use('Agg')\n"
    "import matplotlib.pyplot as plt\n"
    "runpy.run_path(sys.argv[1], run_name='__main__')\n"
    "assert plt.get_fignums(), 'the tutorial made no figure'\n"
)


def test_tutorials_are_collected():
    assert len(EXAMPLES) >= 2, f"no tutorials found under {ROOT / 'examples'}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_tutorial_runs(script, tmp_path):
    env = dict(os.environ)
    env.update(MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, (
        f"{script.name} failed (exit {proc.returncode})\n"
        f"--- stdout (tail) ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr (tail) ---\n{proc.stderr[-4000:]}"
    )
