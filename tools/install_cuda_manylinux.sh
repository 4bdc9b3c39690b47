#!/usr/bin/env bash
# cibuildwheel's before-all on manylinux_2_28 (AlmaLinux 8): install nvcc and the static CUDA runtime
# from NVIDIA's RHEL 8 package repository, nothing else (no driver: the build machine needs no GPU).
# The wheel links cudart statically (CMakeLists.txt), so users need only a driver, no toolkit.
set -euo pipefail
VERSION=${VERISPEC_WHEEL_CUDA:-12.8}
case "$(uname -m)" in
  x86_64) REPO=x86_64 ;;
  aarch64) REPO=sbsa ;;   # server ARM (Grace and friends)
  *) echo "no CUDA packages for $(uname -m)" >&2; exit 1 ;;
esac
dnf install -y dnf-plugins-core
dnf config-manager --add-repo "https://developer.download.nvidia.com/compute/cuda/repos/rhel8/${REPO}/cuda-rhel8.repo"
PKG=${VERSION/./-}
dnf install -y "cuda-nvcc-${PKG}" "cuda-cudart-devel-${PKG}"
ln -sfn "/usr/local/cuda-${VERSION}" /usr/local/cuda
/usr/local/cuda/bin/nvcc --version
