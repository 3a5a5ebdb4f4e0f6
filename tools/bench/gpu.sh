#!/usr/bin/env bash
# The prepared GPU check of issue 8: runs on a lent NVIDIA machine (no apt, no network),
# from the repository root, with the x86-64 kdseg binary and the libraries it needs
# (ICD loader, CLBlast, libnifti) carried in .gpu/. Registers NVIDIA's OpenCL driver with
# the ICD loader when the image has no vendors file, then runs kdseg bench train / infer /
# ops / sched against PyTorch + cuDNN on the same GPU. Everything goes to $OUT.
#   usage (device tool): bash tools/bench/gpu.sh            (carry .gpu)
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
lib=$(ls /usr/local/nvidia/lib64/libnvidia-opencl.so* /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so* \
          /usr/local/nvidia/lib/libnvidia-opencl.so* 2>/dev/null | head -1)
echo "NVIDIA OpenCL driver library: ${lib:-none found}"
ls /etc/OpenCL/vendors 2>/dev/null
if [ -n "$lib" ] && ! grep -qs nvidia /etc/OpenCL/vendors/*.icd; then
    mkdir -p /etc/OpenCL/vendors && echo "$lib" > /etc/OpenCL/vendors/nvidia.icd
    echo "registered $lib in /etc/OpenCL/vendors/nvidia.icd"
fi
[ -z "$lib" ] && find / -xdev -name 'libnvidia-opencl*' 2>/dev/null | head
export LD_LIBRARY_PATH=$PWD/.gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export XDG_CACHE_HOME=/tmp/kdseg-cache
K=.gpu/kdseg
T="--compare-pytorch --torch-device cuda"

step devices
timeout 120 $K devices --build || { echo "no usable OpenCL GPU: stopping"; exit 1; }
step "bench train 64^3"
timeout 150 $K bench train --patch 64 --reps 5 $T --json $OUT/train64.json
step "bench infer 160x192x160"
timeout 150 $K bench infer $T --json $OUT/infer.json
step "bench train 128^3"
timeout 150 $K bench train --patch 128 --reps 3 $T --json $OUT/train128.json
step "bench ops 64^3"
timeout 150 $K bench ops $T --json $OUT/ops.json
step "bench sched"
timeout 60 $K bench sched --json $OUT/sched.json
step done
