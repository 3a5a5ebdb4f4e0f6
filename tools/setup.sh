#!/usr/bin/env bash
# Install what kdseg needs (as root: apt-get; otherwise print the exact line),
# then configure and build with meson into ${BUILD:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="meson ninja-build pkg-config gcc python3 ocl-icd-opencl-dev opencl-headers
      pocl-opencl-icd clinfo libclblast-dev libnifti2-dev libniftiio-dev libznz-dev zlib1g-dev
      cmake clang libclang-rt-dev oclgrind cppcheck"
missing=()
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing packages; run as root:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
BUILD=${BUILD:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" ${MESON_ARGS:-} >/dev/null
fi
ninja -C "$BUILD" >/dev/null
echo "setup: built $BUILD/tools/kdseg"
