#!/usr/bin/env bash
# Set up structattn in a virtual environment and run one job.
#
#   ./scripts/quickstart.sh study [args]   accuracy study on the embedded defaults (main job)
#   ./scripts/quickstart.sh test  [args]   the test suite (what CI runs)
#   ./scripts/quickstart.sh docs           build the Sphinx docs, warnings as errors
#   ./scripts/quickstart.sh bench [args]   the benchmarks (structattn bench)
#   ./scripts/quickstart.sh lint           ruff
#
# Environment: STRUCTATTN_VENV (default .venv), PYTHON (default python3),
# STRUCTATTN_TORCH (pip requirement for torch, default torch==2.13.0: a CPU build is
# installed first so that the `torch>=2.2` range never pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

job="${1:-}"
[ $# -gt 0 ] && shift
case "$job" in
  study|test|docs|bench|lint) ;;
  *) echo "usage: $0 {study|test|docs|bench|lint} [args...]" >&2; exit 2 ;;
esac

venv="${STRUCTATTN_VENV:-.venv}"
python="${PYTHON:-python3}"
torch_req="${STRUCTATTN_TORCH:-torch==2.13.0}"
case "$job" in
  study) extras="torch,studies" ;;
  test)  extras="torch,test" ;;
  docs)  extras="torch,docs" ;;
  bench) extras="torch,bench" ;;
  lint)  extras="lint" ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
vpy="$venv/bin/python"
stamp="$venv/.setup-$(cat pyproject.toml scripts/quickstart.sh | sha1sum | cut -c1-12)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  echo "== installing structattn[$extras] into $venv"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
  if [[ "$extras" == *torch* ]]; then
    "$vpy" -m pip install -q "$torch_req" 2> >(quiet)
  fi
  "$vpy" -m pip install -q -e ".[$extras]" 2> >(quiet)
  touch "$stamp"
fi

export PATH="$PWD/$venv/bin:$PATH"
case "$job" in
  study) exec "$vpy" -m structattn study "$@" ;;
  test)  exec "$vpy" -m pytest -q -p no:cacheprovider "$@" ;;
  docs)  exec "$vpy" -m sphinx -W --keep-going -b html docs docs/_build/html "$@" ;;
  bench) exec "$vpy" -m structattn bench "$@" ;;
  lint)  exec "$vpy" -m ruff check . "$@" ;;
esac
