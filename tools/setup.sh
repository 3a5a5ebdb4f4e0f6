#!/usr/bin/env bash
# Install what kdseg needs, then configure and build with meson into ${BUILD:-build}.
# Packages: as root with apt-get; as a user with sudo, through sudo; otherwise it
# prints the exact line to run as root. --packages-only stops after the packages.
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
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "setup: missing packages and no sudo; run as root:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}${as_root[*]:+ (with sudo)}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ "${1:-}" = --packages-only ] && exit 0
BUILD=${BUILD:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" ${MESON_ARGS:-} >/dev/null
fi
ninja -C "$BUILD" >/dev/null
echo "setup: built $BUILD/tools/kdseg"
