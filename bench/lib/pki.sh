#!/usr/bin/env bash
# One ECDSA P-256 CA and one server certificate signed by it (SAN localhost and 127.0.0.1), for
# every terminator of the benchmark. Usage: pki.sh DIR
# Writes DIR/ca.pem, DIR/server.pem (leaf), DIR/server.key (PKCS#8, mode 600) and
# DIR/server-combined.pem (leaf + key, for haproxy, hitch and stunnel).
set -euo pipefail
dir=$1
cd "$dir"
umask 077

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=tlsgate bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem 2>/dev/null

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
cat > server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
  -extfile server.ext -out server.pem 2>/dev/null
cat server.pem server.key > server-combined.pem
chmod 644 ca.pem server.pem
openssl verify -CAfile ca.pem server.pem >/dev/null
