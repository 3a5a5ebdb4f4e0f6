#!/usr/bin/env bash
# Set everything up and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
BUILD=${BUILD:-build}
"$BUILD/tools/kdseg" devices --build
