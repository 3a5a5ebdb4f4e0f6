#!/usr/bin/env bash
# Set everything up and run the main job: the paper's distillation experiment on a
# built-in synthetic cohort (kdseg demo). Extra arguments go to kdseg demo
# (e.g. --online, --quick, --long, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
BUILD=${BUILD:-build}
"$BUILD/tools/kdseg" devices --build
exec "$BUILD/tools/kdseg" demo "$@"
