#!/usr/bin/env bash
# Makes what deploy/docker-compose.yml and deploy/kustomization.yaml mount but
# the repository must not hold, one identity per client:
#   SECRETS_DIR/tokens.txt        the coordinator's --tokens_file: one line
#                                 "client-00i TOKEN" per client (256 random bits each)
#   SECRETS_DIR/client-00i.token  client i's own token (--token_file)
#   SECRETS_DIR/worker-W.tokens   the tokens of the clients worker pod W hosts
#                                 (k8s/workers.yaml, --tokens_file)
#   CERTS_DIR/ca.pem              a private CA (its key stays in SECRETS_DIR/ca.key,
#                                 which no container mounts), and signed by it:
#   CERTS_DIR/coordinator.pem, .key  for the name "coordinator" (the compose
#                                 service and the k8s Service) and localhost
#   CERTS_DIR/client-00i.pem, .key   client i's certificate: its id is the
#                                 certificate's name (CN and SAN), which the
#                                 coordinator requires of a client that joins
#                                 as client-00i
#   CERTS_DIR/worker-W.pem, .key     worker pod W's, naming each id it hosts
#   SECRETS_DIR/client-00i.identity  client i's Ed25519 identity seed (hex):
#                                 secure aggregation signs its adverts with it
#   CERTS_DIR/identities.txt      every client's identity public key
#                                 ("client-00i HEX"), which each client checks
#                                 the roster's adverts against
# Usage: make_secrets.sh [SECRETS_DIR [CERTS_DIR]]   (default deploy/secrets,
# deploy/certs). LAYERFL_CLIENTS (default 8, configs/distributed.yaml's
# data.num_clients) clients; workers host LAYERFL_PER_WORKER (default 4) each.
# Existing files are kept; delete them to rotate. Both directories are mode
# 0700 and everything in them readable by the owner only: inside the
# containers (root) the bind mounts keep these modes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
secrets="${1:-$here/secrets}"
certs="${2:-$here/certs}"
clients="${LAYERFL_CLIENTS:-8}"
per_worker="${LAYERFL_PER_WORKER:-4}"
umask 077
mkdir -p "$secrets" "$certs"

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

hex() { od -An -tx1 | tr -d ' \n'; }
for ((i = 0; i < clients; i++)); do
  id=$(printf 'client-%03d' "$i")
  issue "$id" "DNS:$id" clientAuth
  if [[ ! -s "$secrets/$id.token" ]]; then
    openssl rand -hex 32 > "$secrets/$id.token"
  fi
  if [[ ! -s "$secrets/$id.identity" ]]; then
    # PKCS#8 and SPKI DER of Ed25519 end with the 32-byte seed and key.
    openssl genpkey -algorithm ed25519 -outform DER -out "$secrets/$id.der"
    tail -c 32 "$secrets/$id.der" | hex > "$secrets/$id.identity"
    openssl pkey -inform DER -in "$secrets/$id.der" -pubout -outform DER |
      tail -c 32 | hex > "$secrets/$id.identity.pub"
    rm -f "$secrets/$id.der"
  fi
done
# The coordinator's tokens file, and each worker's, from the clients' tokens
# (rewritten every time: they follow the per-client files).
: > "$secrets/tokens.txt"
: > "$certs/identities.txt"
for ((i = 0; i < clients; i++)); do
  id=$(printf 'client-%03d' "$i")
  printf '%s %s\n' "$id" "$(cat "$secrets/$id.token")" >> "$secrets/tokens.txt"
  printf '%s %s\n' "$id" "$(cat "$secrets/$id.identity.pub")" >> "$certs/identities.txt"
done
chmod 644 "$certs/identities.txt"  # public keys
for ((w = 0; w * per_worker < clients; w++)); do
  : > "$secrets/worker-$w.tokens"
  san=""
  for ((i = w * per_worker; i < (w + 1) * per_worker && i < clients; i++)); do
    id=$(printf 'client-%03d' "$i")
    printf '%s %s\n' "$id" "$(cat "$secrets/$id.token")" >> "$secrets/worker-$w.tokens"
    san="${san:+$san,}DNS:$id"
  done
  issue "worker-$w" "$san" clientAuth
done
echo "make_secrets: tokens and identities for $clients clients in $secrets, identities.txt in $certs"
