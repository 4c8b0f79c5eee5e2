"""Packaging: the built wheel and sdist are complete and install into a fresh environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _copy_source(dest: Path) -> Path:
    """The files a source distribution is built from (no caches, no build outputs)."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "structattn", src / "structattn",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    return src


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("dist")
    src = _copy_source(tmp)
    out = tmp / "out"
    code = (
        "import sys; from setuptools import build_meta as b; "
        f"print(b.build_wheel({str(out)!r})); print(b.build_sdist({str(out)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=src, check=True, capture_output=True,
                   timeout=300)
    wheel = next(out.glob("structattn-*.whl"))
    sdist = next(out.glob("structattn-*.tar.gz"))
    return tmp, wheel, sdist


def test_version_is_written_once():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    import structattn

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert structattn.__version__ == structattn._version.__version__


def test_wheel_and_sdist_ship_license_and_py_typed(built):
    _, wheel, sdist = built
    names = zipfile.ZipFile(wheel).namelist()
    assert "structattn/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert any(m.endswith("/LICENSE") for m in members)
    assert any(m.endswith("/structattn/py.typed") for m in members)
    import structattn

    assert wheel.name.startswith(f"structattn-{structattn.__version__}-")


def test_wheel_installs_into_fresh_environment(built):
    tmp, wheel, _ = built
    env = tmp / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True,
                   timeout=120)
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300, env=env)
    # dependencies come from this environment's site-packages (a plain path entry: the
    # editable structattn of this checkout is not activated there, the wheel is used)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True
                          ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    smoke = (
        "import importlib.resources, numpy as np, structattn as sa\n"
        "import structattn.studies as st\n"
        "assert 'site-packages' in sa.__file__ and 'fresh' in sa.__file__, sa.__file__\n"
        "assert importlib.resources.files('structattn').joinpath('py.typed').is_file()\n"
        "op = st.get('performer').build(dim=8, seed=0, causal=False, num_features=64)\n"
        "rng = np.random.default_rng(0)\n"
        "q, k, v = rng.standard_normal((3, 16, 8)) * 0.3\n"
        "err = np.linalg.norm(op(q, k, v) - sa.softmax_attention(q, k, v))\n"
        "assert np.isfinite(err) and err < np.linalg.norm(sa.softmax_attention(q, k, v))\n"
        "print(sa.__version__)\n"
    )
    result = subprocess.run([str(python), "-c", smoke], cwd=tmp, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    import structattn

    assert result.stdout.strip() == structattn.__version__
