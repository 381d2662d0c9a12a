#!/bin/sh
# Creates the secrets docker-compose.yml mounts (compose `secrets:`, under /run/secrets in the
# containers), once. Run it from anywhere before the first `docker compose up`:
#
#   sh docker/make-secrets.sh [DIR]        (DIR defaults to docker/secrets next to this script)
#
#   redis-users.acl          Redis ACL file: the gateway's user (append and read the audit stream,
#                            never delete; full use of its own other keys), a PING-only user for the
#                            healthcheck, the default user off. Holds the password's SHA-256 only.
#   audit-redis-url          redis://phi-gateway:PASSWORD@redis:6379, read by the gateway through
#                            PHI_GATEWAY_AUDIT_FILE.
#   audit-signing-key        Ed25519 private key (PKCS#8 PEM) that signs audit checkpoints
#                            (PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE).
#   audit-signing-key.pub.pem  its public key: copy it OFF this machine, to whoever runs
#                            `phi-gateway audit verify --public-key`; it is not mounted anywhere.
#   pseudonym-key            HMAC key for the pseudonym transform (PHI_GATEWAY_PSEUDONYM_KEY_FILE).
#
# Existing files are kept (rotating a key is a deliberate act: delete the file first). The
# directory is private to you (0700); the files are world-readable inside it (0444) because
# compose bind-mounts them into containers running as other users (gateway 10001, redis 999).
# Needs: openssl.
set -eu

dir=${1:-$(dirname "$0")/secrets}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

made=""
seal() {
  chmod 0444 "$dir/$1"
  made="$made $1"
}

# The gateway's Redis ACL: the same rules docs/production.md gives (a test keeps them equal).
GATEWAY_ACL='resetkeys resetchannels nocommands +@connection +info ~phi-gateway:audit +xadd +xrange +xrevrange +xlen +xinfo|stream +xgroup|create +xreadgroup +xack +xautoclaim +xinfo|groups +eval +evalsha +script|load +multi +exec +discard (~phi-gateway:bg:* ~phi-gateway:anomaly:* ~phi-gateway:rel:* ~phi-gateway:access:* ~phi-gateway:access-alerts:* &phi-gateway:* +@all -@dangerous)'

# The ACL file and the URL share one password: both are made together, or both kept.
if [ ! -e "$dir/redis-users.acl" ] || [ ! -e "$dir/audit-redis-url" ]; then
  rm -f "$dir/redis-users.acl" "$dir/audit-redis-url"
  password=$(openssl rand -hex 32)
  hash=$(printf '%s' "$password" | openssl dgst -sha256 -r | cut -d' ' -f1)
  {
    echo "user phi-gateway on #$hash $GATEWAY_ACL"
    echo 'user healthcheck on nopass resetkeys resetchannels nocommands +ping'
    echo 'user default off'
  } >"$dir/redis-users.acl"
  printf 'redis://phi-gateway:%s@redis:6379\n' "$password" >"$dir/audit-redis-url"
  unset password
  seal redis-users.acl
  seal audit-redis-url
fi

if [ ! -e "$dir/audit-signing-key" ]; then
  rm -f "$dir/audit-signing-key.pub.pem"
  openssl genpkey -algorithm ed25519 -out "$dir/audit-signing-key"
  openssl pkey -in "$dir/audit-signing-key" -pubout -out "$dir/audit-signing-key.pub.pem"
  seal audit-signing-key
  seal audit-signing-key.pub.pem
fi

if [ ! -e "$dir/pseudonym-key" ]; then
  openssl rand -hex 32 >"$dir/pseudonym-key"
  seal pseudonym-key
fi

if [ -n "$made" ]; then
  echo "make-secrets: created in $dir:$made"
else
  echo "make-secrets: all secrets already in $dir (kept)"
fi
echo "make-secrets: keep a copy of $dir/audit-signing-key.pub.pem off this machine (audit verify --public-key)"
