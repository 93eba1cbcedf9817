#!/usr/bin/env bash
# PROTOTYPE: a per-migration CA, a page-server certificate for SRC_IP and a client certificate, as the
# planner would issue them for CRIU's own --tls (design a). usage: make-tls.sh DIR SRC_IP
set -euo pipefail
D=$1; IP=$2; mkdir -p "$D"; cd "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=ums-migration-ca" -keyout ca.key -out ca.pem 2>/dev/null
for who in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$IP" -keyout $who.key -out $who.csr 2>/dev/null
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$IP" > $who.ext
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile $who.ext -out $who.pem 2>/dev/null
done
echo "$D: ca.pem server.pem/key client.pem/key"
