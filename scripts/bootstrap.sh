#!/usr/bin/env bash
# Create .venv with Python >= 3.11 and install seamguard into it.
# Installs Debian's venv package when the interpreter lacks ensurepip (a fresh Debian image does).
set -euo pipefail
EXTRAS="${1:-}"
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

PY="$(pick_python || true)"
if [ -z "$PY" ]; then
  as_root apt-get update -qq
  as_root apt-get install -y -qq python3 python3-venv >/dev/null
  PY="$(pick_python)"
fi
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  as_root apt-get update -qq
  as_root apt-get install -y -qq "python${ver}-venv" >/dev/null || as_root apt-get install -y -qq python3-venv >/dev/null
fi

if [ "$EXTRAS" = dev ]; then
  bash scripts/system_packages.sh  # Slurm, munge, Prometheus, HAProxy: the tests' real components
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=".venv/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ -n "$EXTRAS" ]; then
    .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$STAMP"
fi
