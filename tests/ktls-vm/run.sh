#!/usr/bin/env bash
# Kernel TLS offload in a real kernel: boots the newest /boot kernel (Debian's, with the tls
# module) under QEMU from a busybox initramfs holding tlsgate, curl and openssl, and runs
# guest.sh inside it. The host kernel needs no CONFIG_TLS. No KVM: TCG (the emulated CPU is
# slow: this checks correctness, never speed).
#
# Prints `ktls-vm: N passed, M failed`; exits non-zero on any failure.
# Environment: TLSGATE_BIN (default target/debug/tlsgate, built if missing), KTLSVM_BIG and
# KTLSVM_SMALL (bytes per transfer), BOOT_TIMEOUT (seconds, default 900), KTLSVM_KEEP=1 keeps
# the work directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
W=$(mktemp -d /tmp/ktls-vm.XXXXXX)
[ "${KTLSVM_KEEP:-0}" = 1 ] || trap 'rm -rf "$W"' EXIT

bin=${TLSGATE_BIN:-$repo/target/debug/tlsgate}
if [ ! -x "$bin" ]; then
    (cd "$repo" && cargo build -p tlsgate)
fi
vmlinuz=$(ls -1 /boot/vmlinuz-* | sort -V | tail -n 1)
K=${vmlinuz#/boot/vmlinuz-}
echo "== ktls-vm: guest kernel $K, tlsgate $bin"

R=$W/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,test,etc}
cp /bin/busybox "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
ln -s ../bin/busybox "$R/sbin/modprobe"

# The debug binary `cargo test` built, its debug info left out (a quarter of the size).
strip --strip-debug -o "$R/test/tlsgate" "$bin"
gcc -O2 -Wall -static -o "$R/test/tamper" "$here/tamper.c"
cp "$here/guest.sh" "$here/guest-inline.sh" "$R/test/"
cp "$(command -v curl)" "$R/bin/curl"
cp "$(command -v openssl)" "$R/bin/openssl"
# iproute2 and ethtool for the inline case's namespaces and veths (busybox's ip has neither).
cp "$(command -v ip)" "$R/sbin/ip.iproute2"

cp "$(command -v ethtool)" "$R/sbin/ethtool"
# Each dynamic program's libraries, at the paths its loader expects.
for prog in "$R/test/tlsgate" "$R/bin/curl" "$R/bin/openssl" "$R/sbin/ip.iproute2" "$R/sbin/ethtool"; do
    for lib in $(ldd "$prog" | grep -o '/[^ ]*'); do
        [ -e "$R$lib" ] && continue
        mkdir -p "$R$(dirname "$lib")"
        cp -L "$lib" "$R$lib"
    done
done
# openssl looks for its config; an empty one is enough.
mkdir -p "$R/usr/lib/ssl" && : > "$R/usr/lib/ssl/openssl.cnf"

# The tls module and the AEADs it allocates (gcm(aes), rfc7539(chacha20,poly1305)), with their
# dependencies in load order; the x86 accelerated ones load if the emulated CPU has the
# instructions (-cpu max).
mods=()
for m in tls veth gcm ctr ghash-generic chacha20poly1305 chacha-generic poly1305-generic \
    aesni-intel ghash-clmulni-intel chacha-x86_64 poly1305-x86_64; do
    while read -r kind path; do
        [ "$kind" = insmod ] || continue
        case " ${mods[*]:-} " in *" $path "*) continue ;; esac
        mods+=("$path")
        mkdir -p "$R$(dirname "$path")"
        cp "$path" "$R$path"
    done < <(modprobe -S "$K" --show-depends "$m" 2>/dev/null || true)
done

# A throwaway ECDSA certificate for tlsgate.test (self-signed: the clients trust it directly).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=tlsgate.test \
    -addext subjectAltName=DNS:tlsgate.test -keyout "$R/test/key.pem" -out "$R/test/cert.pem" 2>/dev/null
chmod 600 "$R/test/key.pem"
# For originate's upstream, which rustls verifies: a CA and a leaf it issued (a self-signed
# certificate is a CA, which webpki refuses as an end entity).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=ktls-vm-ca \
    -keyout "$W/ca.key" -out "$R/test/oca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=tlsgate.test \
    -keyout "$R/test/okey.pem" -out "$W/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:tlsgate.test\nbasicConstraints=critical,CA:FALSE\n' > "$W/leaf.ext"
openssl x509 -req -in "$W/leaf.csr" -CA "$R/test/oca.pem" -CAkey "$W/ca.key" -set_serial 2 -days 2 \
    -extfile "$W/leaf.ext" -out "$R/test/ocert.pem" 2>/dev/null
chmod 600 "$R/test/okey.pem"
# The tunnel portal's client certificate, from the same CA (the gate serves ocert.pem).
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=portal.test \
    -keyout "$R/test/pkey.pem" -out "$W/portal.csr" 2>/dev/null
printf 'subjectAltName=DNS:portal.test\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' > "$W/portal.ext"
openssl x509 -req -in "$W/portal.csr" -CA "$R/test/oca.pem" -CAkey "$W/ca.key" -set_serial 3 -days 2 \
    -extfile "$W/portal.ext" -out "$R/test/pcert.pem" 2>/dev/null
chmod 600 "$R/test/pkey.pem"

cat > "$R/init" <<INIT
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
echo "== guest: \$(uname -r), \$(nproc) CPU(s)"
for m in ${mods[*]}; do insmod \$m 2>/dev/null; done
ip link set lo up
export KTLSVM_BIG=${KTLSVM_BIG:-67108864} KTLSVM_SMALL=${KTLSVM_SMALL:-4194304}
sh /test/guest-inline.sh
sh /test/guest.sh
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$W/initrd.gz"
echo "== initramfs: $(du -h "$W/initrd.gz" | cut -f1)"

# The kernel's uncompressed ELF image boots directly (PVH entry), faster than the bzImage:
# it is the xz stream inside vmlinuz.
kernel=$vmlinuz
off=$(grep -abo $'\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
if [ -n "$off" ] && tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream > "$W/vmlinux" 2>/dev/null; then
    kernel=$W/vmlinux
fi

t0=$(date +%s)
set +e
timeout "${BOOT_TIMEOUT:-900}" qemu-system-x86_64 -cpu max -smp 2 -m 1536 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$W/initrd.gz" -append 'console=ttyS0 quiet panic=-1' \
    </dev/null 2>&1 | tr -d '\r' > "$W/console.log"
set -e
secs=$(($(date +%s) - t0))
grep -E '^(== |KTLSVM )' "$W/console.log" | sed 's/^/  | /'
passed=$(grep -c '^KTLSVM PASS' "$W/console.log" || true)
failed=$(grep -c '^KTLSVM FAIL' "$W/console.log" || true)
skipped=$(grep -c '^KTLSVM SKIP' "$W/console.log" || true)
if ! grep -q '^KTLSVM DONE' "$W/console.log"; then
    echo "== the guest did not finish (${secs} s)"
    failed=$((failed + 1))
fi
if [ "$failed" -gt 0 ]; then
    echo "== guest console (last lines, tlsgate's log included):"
    tail -n 60 "$W/console.log" | sed 's/^/  | /'
fi
echo "== VM run: ${secs} s; $skipped skipped"
echo "ktls-vm: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
