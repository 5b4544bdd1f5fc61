#!/usr/bin/env bash
# Makes what deploy/docker-compose.yml mounts but the repository must not hold:
#   SECRETS_DIR/token.txt   the run's shared token (--token_file), 256 random bits
#   CERTS_DIR/ca.pem        a private CA (its key stays in SECRETS_DIR/ca.key,
#                            which no container mounts), and signed by it:
#   CERTS_DIR/coordinator.pem, coordinator.key   for the name "coordinator"
#                            (the compose service) and localhost
#   CERTS_DIR/client.pem, client.key             a client certificate (mutual TLS)
# Usage: make_secrets.sh [SECRETS_DIR [CERTS_DIR]]   (default deploy/secrets,
# deploy/certs). Existing files are kept; delete them to rotate. Both
# directories are mode 0700 and everything in them readable by the owner only:
# inside the containers (root) the bind mounts keep these modes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
secrets="${1:-$here/secrets}"
certs="${2:-$here/certs}"
umask 077
mkdir -p "$secrets" "$certs"

if [[ ! -s "$secrets/token.txt" ]]; then
  openssl rand -hex 32 > "$secrets/token.txt"
  echo "make_secrets: wrote $secrets/token.txt"
fi

if [[ ! -s "$certs/ca.pem" ]]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=LayerFL CA" \
    -keyout "$secrets/ca.key" -out "$certs/ca.pem" 2>/dev/null
  echo "make_secrets: wrote $certs/ca.pem"
fi

# name, subjectAltName, extendedKeyUsage
issue() {
  local name="$1" san="$2" usage="$3"
  [[ -s "$certs/$name.pem" ]] && return 0
  openssl req -newkey rsa:3072 -nodes -subj "/CN=$name" \
    -keyout "$certs/$name.key" -out "$certs/$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$san" "$usage" > "$certs/$name.ext"
  openssl x509 -req -in "$certs/$name.csr" -CA "$certs/ca.pem" -CAkey "$secrets/ca.key" \
    -CAcreateserial -CAserial "$secrets/ca.srl" -days 825 -extfile "$certs/$name.ext" -out "$certs/$name.pem" 2>/dev/null
  rm -f "$certs/$name.csr" "$certs/$name.ext"
  echo "make_secrets: wrote $certs/$name.pem"
}
issue coordinator "DNS:coordinator,DNS:localhost,IP:127.0.0.1" serverAuth
issue client "DNS:layerfl-client" clientAuth
