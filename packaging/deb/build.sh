#!/bin/sh
# Builds tlsgate's .deb around an already built binary, with dpkg-deb alone.
#
#   packaging/deb/build.sh [BINARY] [OUTDIR]
#
# BINARY defaults to target/release/tlsgate (cargo build --release), OUTDIR to target/deb.
# DEB_COMPRESSION (xz by default; gzip is several times faster) is dpkg-deb's -Z.
# Prints the path of the package it wrote. Needs dpkg-deb and binutils (strip, objdump).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary=${1:-$repo/target/release/tlsgate}
out=${2:-$repo/target/deb}

[ -x "$binary" ] || { echo "build.sh: no executable at $binary (cargo build --release first)" >&2; exit 1; }

# The version the binary reports ("tlsgate 0.1.0"), so the package names what it carries.
version=$("$binary" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary uses is the libc6 it needs.
glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)

root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/etc/tlsgate" \
    "$root/usr/share/doc/tlsgate"

strip --strip-all -o "$root/usr/bin/tlsgate" "$binary"
chmod 755 "$root/usr/bin/tlsgate"
install -m 644 "$repo/packaging/systemd/tlsgate.service" "$root/usr/lib/systemd/system/tlsgate.service"
install -m 644 "$repo/packaging/tlsgate.toml" "$root/etc/tlsgate/tlsgate.toml"
install -m 644 "$here/copyright" "$root/usr/share/doc/tlsgate/copyright"
install -m 644 "$repo/LICENSE" "$root/usr/share/doc/tlsgate/LICENSE"
install -m 644 "$repo/README.md" "$repo"/docs/*.md "$root/usr/share/doc/tlsgate/"
for script in postinst prerm postrm; do
    install -m 755 "$here/$script" "$root/DEBIAN/$script"
done
echo /etc/tlsgate/tlsgate.toml >"$root/DEBIAN/conffiles"
(cd "$root" && find usr -type f -exec md5sum {} + | sort -k 2) >"$root/DEBIAN/md5sums"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: tlsgate
Version: $version
Architecture: $arch
Maintainer: tlsgate developers <tlsgate@localhost>
Installed-Size: $size
Depends: libc6 (>= $glibc), libgcc-s1, adduser, openssl
Section: net
Priority: optional
Description: TLS offload gateway
 tlsgate takes TLS off the programs that should not carry it: it terminates
 TLS in front of plaintext backends (certificates and routes by SNI, mutual
 TLS), originates TLS for programs without TLS code, and tunnels TCP and UDP
 flows over one mutually authenticated TLS connection.
 .
 The package runs "tlsgate terminate" as the tlsgate user under systemd, with
 the configuration in /etc/tlsgate/tlsgate.toml.
CONTROL

mkdir -p "$out"
deb="$out/tlsgate_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"
