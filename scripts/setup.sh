#!/usr/bin/env bash
# Sets up faasd on a fresh Debian 12 machine, as root: system packages, CRIU >= 4.2, the Python venv
# (.venv in this checkout) and the default base images (faasd/python, faasd/node). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

bash scripts/setup-system.sh

if [ ! -x .venv/bin/python ]; then
  say "creating Python venv in .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import faasd, pytest, fastapi' >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.faasd-installed ]; then
  say "installing faasd and its dependencies into .venv"
  if ! .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' > .venv/pip-install.log 2>&1; then
    tail -n 40 .venv/pip-install.log >&2
    echo "[setup] error: pip install failed (full log: .venv/pip-install.log)" >&2
    exit 1
  fi
  touch .venv/.faasd-installed
else
  say "venv up to date"
fi
# An editable install is not byte-compiled (a wheel install is): without this, a shell with
# PYTHONDONTWRITEBYTECODE=1 compiles faasd's sources on every `faas` run (~50-80 ms of each, measured).
.venv/bin/python -m compileall -q -j 0 src > /dev/null

if [ "${FAASD_SKIP_BASE_IMAGES:-0}" != 1 ]; then
  say "ensuring base images (built once with debootstrap, then cached in /var/cache/faasd/base)"
  .venv/bin/python -m faasd.baseimages ensure
fi
say "ready"
