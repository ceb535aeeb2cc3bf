#!/bin/sh
# Runs inside the VM after guest.sh: `tlsgate inline run` on Debian's own kernel, between
# network namespaces, with segmentation offload on the hosts' veths so the gate's AF_PACKET
# ring receives GSO frames with their virtio-net headers (PACKET_VNET_HDR on a TPACKET_V3 ring).
# Same output protocol as guest.sh: `KTLSVM PASS|FAIL|SKIP name`.
G=/test/tlsgate
# iproute2's ip by its path: busybox sh runs its own `ip` applet (no netns, no veth) for a bare `ip`.
IP=/sbin/ip.iproute2
SERVER=10.77.0.2
pass() { echo "KTLSVM PASS $1"; }
skip() { echo "KTLSVM SKIP $1"; }
fail() { echo "KTLSVM FAIL $1: $2"; }
wait_for() {
    i=0
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ "$i" -gt "${3:-600}" ] && return 1; sleep 0.1
    done
}
in_ns() { ns=$1; shift; $IP netns exec "$ns" "$@"; }

mkdir -p /run/netns /var && { [ -e /var/run ] || ln -s /run /var/run; }
head -c 1048576 /dev/urandom >/tmp/ismall
for ns in icli igate isrv; do $IP netns add $ns || { fail "inline: setup" "$IP netns add $ns"; exit 0; }; done
$IP link add c0 netns icli type veth peer name gc netns igate
$IP link add s0 netns isrv type veth peer name gs netns igate
in_ns icli $IP addr add 10.77.0.1/24 dev c0
in_ns isrv $IP addr add $SERVER/24 dev s0
for pair in icli:c0 isrv:s0 igate:gc igate:gs; do
    ns=${pair%%:*} dev=${pair#*:}
    in_ns "$ns" $IP link set lo up
    in_ns "$ns" $IP link set "$dev" up
done
# The hosts keep the veth defaults (TSO, GSO, checksum offload on): their stacks hand the gate
# 64 KiB frames with partial checksums. GRO off on the gate's ports: frames as sent.
in_ns igate ethtool -K gc gro off
in_ns igate ethtool -K gs gro off

in_ns isrv $G backend --listen $SERVER:80 >/tmp/ibackend.log 2>&1 &
IB=$!
in_ns igate $G inline run --client-iface gc --server-iface gs --service $SERVER:443=80 \
    --cert /test/cert.pem --key /test/key.pem --admin 127.0.0.1:9092 >/tmp/inline.log 2>&1 &
IG=$!
if ! wait_for /tmp/ibackend.log "backend listening" || ! wait_for /tmp/inline.log "inline running"; then
    fail "inline: start" "$(tail -n 5 /tmp/inline.log)"
    kill $IB $IG 2>/dev/null
    exit 0
fi
pass "inline: tlsgate inline run started on $(uname -r)"

want=$(sha256sum </tmp/ismall | cut -d' ' -f1)
t0=$(date +%s)
rm -f /tmp/idown
if ! in_ns icli curl -sS --max-time 300 --cacert /test/cert.pem --resolve tlsgate.test:443:$SERVER \
    --tls13-ciphers TLS_AES_128_GCM_SHA256 -H 'content-type: application/octet-stream' \
    --data-binary @/tmp/ismall https://tlsgate.test/echo -o /tmp/idown 2>/tmp/icurl.err; then
    fail "inline: transfer" "curl: $(cat /tmp/icurl.err)"
elif [ "$(sha256sum </tmp/idown | cut -d' ' -f1)" != "$want" ]; then
    fail "inline: transfer" "echoed body differs ($(wc -c </tmp/idown) bytes back)"
else
    status=$(in_ns igate curl -sS http://127.0.0.1:9092/status.json)
    whole=$(echo "$status" | grep -o '"gso_whole":[0-9]*' | cut -d: -f2)
    if [ "${whole:-0}" -gt 0 ]; then
        pass "inline: $(wc -c </tmp/ismall) bytes up and down identical, $whole GSO frames received whole ($(($(date +%s) - t0)) s)"
    else
        fail "inline: GSO frames" "no frame received whole: $(echo "$status" | grep -o '"bridge":{[^}]*}')"
    fi
fi
if grep -qi "panick" /tmp/inline.log; then fail "inline: no panic" "$(grep -i panick /tmp/inline.log)"; fi
kill $IG $IB 2>/dev/null
