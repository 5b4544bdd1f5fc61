#!/usr/bin/env bash
# Makes the two base images deploy/Dockerfile starts from, debian:bookworm and
# debian:bookworm-slim, out of Debian's own packages, for a Docker engine that
# cannot pull them (no registry reachable, only Debian's apt mirror):
#   debootstrap --variant=minbase bookworm into a temporary folder, then
#   tar | docker import, once as debian:bookworm and once, docs, man pages
#   and locales removed, as debian:bookworm-slim.
# Usage (root; needs debootstrap, which scripts/setup.sh installs):
#   bash deploy/make_base_images.sh [MIRROR]
# MIRROR defaults to the bookworm mirror this host's apt uses
# (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list), else
# http://deb.debian.org/debian; the security mirror likewise (SECURITY_MIRROR).
# Cached: when both tags exist it does nothing; delete them to rebuild
# (docker rmi debian:bookworm debian:bookworm-slim). Safe to rerun; the
# temporary folder is removed however it exits.
#
# Containers on the default bridge network reach the mirror the way the host
# does (docker0 is masqueraded; DNS is the host's nameserver, not /etc/hosts),
# so a plain `docker build -f deploy/Dockerfile -t layerfl:latest .` works.
# Where they cannot (a firewall, a mirror named only in the host's /etc/hosts,
# a proxy on 127.0.0.1), build with the host's network:
#   docker build --network host -f deploy/Dockerfile -t layerfl:latest .
# Build with BuildKit (DOCKER_BUILDKIT=1 with Debian's docker.io client, or a
# client with buildx): only BuildKit reads deploy/Dockerfile.dockerignore.
# The legacy builder (a newer client without buildx falls back to it) sends
# the whole tree, build*/ and .git/ included (about 96 MB instead of 7 MB).
set -euo pipefail

start=$SECONDS

if docker image inspect debian:bookworm debian:bookworm-slim >/dev/null 2>&1; then
  echo "make_base_images: debian:bookworm and debian:bookworm-slim already exist, nothing to do"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "make_base_images: run as root (debootstrap makes device nodes and owns files as root)" >&2
  exit 2
fi
command -v debootstrap >/dev/null || {
  echo "make_base_images: debootstrap is missing (bash scripts/setup.sh installs it)" >&2
  exit 2
}

# The first URI the host's apt uses for SUITE (one-line and deb822 formats).
host_mirror() {
  local suite="$1" f files=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] && files+=("$f")
  done
  ((${#files[@]})) || return 0
  awk -v suite="$suite" '
    /^[[:space:]]*#/ { next }
    /^deb[[:space:]]/ {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; exit }
      next
    }
    /^URIs:/   { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") { print uri; exit } }
    /^[[:space:]]*$/ { uri = "" }
  ' "${files[@]}"
}
mirror="${1:-$(host_mirror bookworm)}"
mirror="${mirror:-http://deb.debian.org/debian}"
security="${SECURITY_MIRROR:-$(host_mirror bookworm-security)}"
security="${security:-http://deb.debian.org/debian-security}"

work="$(mktemp -d /var/tmp/layerfl-base.XXXXXX)"
cleanup() {
  # debootstrap unmounts what it mounted, but not when it is killed: never let
  # rm reach into a mounted /proc or /sys.
  local m
  for m in $(awk -v d="$work" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
root="$work/rootfs"

echo "make_base_images: debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

# What Debian's official images hold beyond the packages: the updates and
# security suites, and apt settings for containers (no package caches kept,
# no translations, indexes kept compressed, no Recommends-to-Suggests autoremove).
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/* "$root"/tmp/* "$root"/root/.bash_history
: >"$root/etc/machine-id"
echo "debian" >"$root/etc/hostname"

changes=(--change 'CMD ["bash"]'
         --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
import_image() {
  local tag="$1"
  tar --numeric-owner --xattrs -C "$root" -c . | docker import "${changes[@]}" \
    --message "debootstrap --variant=minbase bookworm $mirror" - "$tag" >/dev/null
  echo "make_base_images: $tag $(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec)"
}
import_image debian:bookworm

# bookworm-slim is a second, smaller image, as Debian's own slim one: the
# runtime stage needs no docs, man pages or locales, and dpkg is told to leave
# them out of the packages installed later too (copyright files stay).
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
import_image debian:bookworm-slim

echo "make_base_images: done in $((SECONDS - start)) s"
