#!/usr/bin/env bash
# Installs everything LayerFL needs to build and test on Debian 12 (with
# --plots, also what the demo's and experiments' plots need).
# Idempotent: packages already present are skipped, and apt is not touched at all
# when nothing is missing. Run as root (CI and the README's commands do).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-openmp
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libyaml-cpp-dev zlib1g-dev nlohmann-json3-dev
  libsodium-dev libgfshare-dev
  libutf8proc-dev libsentencepiece-dev sentencepiece
  libjpeg62-turbo-dev libpng-dev
  python3-sentencepiece python3-regex
  prometheus-cpp-dev libcpp-httplib-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  python3-torch
  iproute2 openssl docker-compose debootstrap
  prometheus chromium fonts-dejavu-core
)

# --plots: also what the experiment plots need (make demo, make experiments).
if [[ "${1:-}" == "--plots" ]]; then
  PACKAGES+=(python3-matplotlib)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# LibTorch must use the OpenMP build of OpenBLAS (libopenblas, libblas and
# liblapack alike: mixing the two builds livelocks in sgemm): the pthread build, which
# other packages (python3-matplotlib's numpy) pull in and which outranks it,
# starts its threads before main(), where SIGTERM is not yet blocked, and
# ignores LibTorch's thread count.
pin_openblas() {
  local dir=/usr/lib/x86_64-linux-gnu
  local lib
  for lib in libopenblas.so.0 libblas.so.3 liblapack.so.3; do
    local openmp=$dir/openblas-openmp/$lib link=$lib-x86_64-linux-gnu
    if [[ -e $openmp ]] && update-alternatives --query "$link" >/dev/null 2>&1 &&
       [[ $(readlink -f "$dir/$lib") != $(readlink -f "$openmp") ]]; then
      echo "setup: pointing $link at the OpenMP build"
      ${SUDO:-} update-alternatives --set "$link" "$openmp" >/dev/null
    fi
  done
}

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages present"
  pin_openblas
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
pin_openblas
