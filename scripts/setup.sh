#!/usr/bin/env bash
# One-time set-up of a fresh machine: system data packages (best effort), a virtual environment in
# .venv, the CPU build of PyTorch, then tripletkit with all its extras. Safe to run again: it only
# reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

# Real data that ships as Debian packages (see README, "Data"), and Chromium for the report's
# browser test (tests/report). Missing packages are not fatal: the code says which command installs
# them when it needs them, and the browser test is skipped without Chromium.
want_debs=(dataset-fashion-mnist wordnet-base chromium)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${want_debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ "${#missing[@]}" -gt 0 ] && [ "${TRIPLETKIT_SKIP_APT:-0}" != 1 ] && ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get; skipping Debian packages ${missing[*]}"
elif [ "${#missing[@]}" -gt 0 ] && [ "${TRIPLETKIT_SKIP_APT:-0}" != 1 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq >/tmp/tripletkit-apt.log 2>&1 || echo "setup: apt-get update failed (see /tmp/tripletkit-apt.log)"
    # One package at a time: one that cannot be installed (e.g. no chromium for this
    # architecture) must not keep the others out.
    for p in "${missing[@]}"; do
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$p" >>/tmp/tripletkit-apt.log 2>&1 \
        || echo "setup: could not install $p (see /tmp/tripletkit-apt.log); continuing without it"
    done
  else
    echo "setup: not root; skipping Debian packages ${missing[*]}"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# The CPU build first: with torch==2.13.0 already present, tripletkit's `torch>=2.6` is satisfied and
# pip never downloads the multi-GB CUDA wheels.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0 (CPU build)"
  "${PIP[@]}" install "torch==2.13.0"
fi

stamp="$VENV/.tripletkit-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing tripletkit[all] into $VENV"
  "${PIP[@]}" install -e ".[all]"
  echo "$want" >"$stamp"
fi
