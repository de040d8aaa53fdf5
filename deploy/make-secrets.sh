#!/usr/bin/env bash
# Makes what docker-compose.yml reads and the repository never holds, leaving existing files be:
#   .env                                   fresh random passwords (from .env.example's names)
#   deploy/secrets/mongo-keyfile           the replica set's key file
#   deploy/secrets/token-signing-key.pem   Ed25519 private key: keep it with the token issuer
#   deploy/secrets/token-verifying-key.pem its public key, the only key the gateways get
#   deploy/nginx/certs/tls.{crt,key}       a self-signed certificate for localhost (development)
set -euo pipefail
cd "$(dirname "$0")/.."
umask 077

random() { openssl rand -base64 36 | tr -d '/+=\n' | cut -c1-32; }

if [ ! -f .env ]; then
  while IFS= read -r line; do
    case "$line" in
      *PASSWORD=*) echo "${line%%=*}=$(random)" ;;
      *) echo "$line" ;;
    esac
  done < .env.example > .env
  echo "wrote .env"
fi

mkdir -p deploy/secrets deploy/nginx/certs
if [ ! -f deploy/secrets/mongo-keyfile ]; then
  openssl rand -base64 756 > deploy/secrets/mongo-keyfile
  echo "wrote deploy/secrets/mongo-keyfile"
fi
if [ ! -f deploy/secrets/token-signing-key.pem ]; then
  openssl genpkey -algorithm ed25519 -out deploy/secrets/token-signing-key.pem
  openssl pkey -in deploy/secrets/token-signing-key.pem -pubout \
    -out deploy/secrets/token-verifying-key.pem
  chmod 644 deploy/secrets/token-verifying-key.pem
  echo "wrote the token key pair in deploy/secrets/"
fi
if [ ! -f deploy/nginx/certs/tls.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout deploy/nginx/certs/tls.key -out deploy/nginx/certs/tls.crt 2>/dev/null
  chmod 644 deploy/nginx/certs/tls.crt
  echo "wrote a self-signed certificate in deploy/nginx/certs/ (development only)"
fi
echo "tokens: DRONEFLOW_AUTH_PRIVATE_KEY_FILE=deploy/secrets/token-signing-key.pem droneflow token create --role admin --id ops"
