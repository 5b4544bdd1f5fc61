#!/usr/bin/env bash
# The runtime image of deploy/Dockerfile around binaries built on this host,
# for tests that need the image but not a second compile inside Docker (the
# Dockerfile's build stage takes ~20 minutes on 2 cores; this takes the
# runtime packages' download once, then seconds).
#
#   deploy/make_local_image.sh BUILD_DIR TAG       (e.g. build layerfl:local)
#
# Its Dockerfile is deploy/Dockerfile's runtime stage, read from there, with
# each `COPY --from=build /src/build/bin/X` taken from BUILD_DIR/bin/X instead,
# so the two images hold the same packages, paths and settings. The base
# image comes from deploy/make_base_images.sh when the engine has none.
# The binaries must have been built on Debian 12 (they load its libraries).
set -euo pipefail

readonly BUILD_DIR="$(cd "${1:?usage: make_local_image.sh BUILD_DIR TAG}" && pwd)"
readonly TAG="${2:?usage: make_local_image.sh BUILD_DIR TAG}"
readonly SRC="$(cd "$(dirname "$0")/.." && pwd)"

bash "$SRC/deploy/make_base_images.sh"
ctx="$(mktemp -d /tmp/layerfl-image.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
cp -r "$SRC/configs" "$ctx/configs"
stage="$(sed -n '/^FROM .* AS runtime/,$p' "$SRC/deploy/Dockerfile")"
[[ -n "$stage" ]] || { echo "make_local_image: no runtime stage in deploy/Dockerfile" >&2; exit 1; }
for b in $(sed -n 's|^COPY --from=build /src/build/bin/\([^ ]*\) .*|\1|p' <<<"$stage"); do
  cp "$BUILD_DIR/bin/$b" "$ctx/bin/$b"
  strip "$ctx/bin/$b"
done
sed 's|^COPY --from=build /src/build/bin/|COPY bin/|' <<<"$stage" >"$ctx/Dockerfile"
start=$SECONDS
docker build -q -t "$TAG" "$ctx" >/dev/null
echo "make_local_image: $TAG from $BUILD_DIR/bin in $((SECONDS - start)) s"
