#!/usr/bin/env bash
# Installs what bayesagg needs from Debian 12's packages and builds it into build/.
# Safe to run again: packages already present are not reinstalled, the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ccache pkg-config
  libtorch-dev libopenblas0-openmp          # LibTorch 1.13 (CPU) on OpenBLAS with OpenMP threads
  libgloo-dev                                # c10d ProcessGroupGloo (data-parallel training)
  nlohmann-json3-dev libcli11-dev zlib1g-dev
  libgtest-dev libbenchmark-dev
  dataset-fashion-mnist                      # the embedded benchmarks' data
  libpng-dev libjpeg-dev                     # ChestX-ray14 (PNG) and UTKFace (JPEG) readers
  librdkit-dev libboost-dev                  # QM9: molecules through RDKit
  python3-torch python3-dev pybind11-dev     # the Python package (python/): Debian's torch loads
  python3-numpy python3-pytest               #   libtorch-dev's libtorch; tests/python, examples
  python3-pip python3-setuptools python3-wheel  # `pip install --no-build-isolation .` offline
  clang libclang-rt-14-dev                   # fuzz/ (scripts/fuzz.sh, .ci/run): libFuzzer, ASan
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas-openmp*) ;;
  *) echo "setup: warning: BLAS is '$blas', not OpenBLAS (OpenMP); LibTorch will be much slower." \
          "Run: update-alternatives --config libblas.so.3-x86_64-linux-gnu" >&2 ;;
esac

# Paths relative to the checkout in ccache's keys: clones elsewhere (CI) reuse the same cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2
