#!/usr/bin/env bash
# One command to set up and run the platform: embedded SQLite, default base images, API on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/faas up "$@"
