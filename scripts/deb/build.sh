#!/usr/bin/env bash
# Builds the Debian package of iotauth with dpkg-deb (make deb runs it):
#   scripts/deb/build.sh VERSION OUT.deb
# It builds the plugin and iotauth as a distribution would (position-independent, full RELRO, fortified
# C, paths trimmed, stripped), assembles the package tree in a temporary directory (the files of
# scripts/deb/files, the binaries, a copyright file with the license of every Go module linked in, a
# changelog) and lets dpkg-shlibdeps compute the libc dependency. See docs/packaging.md.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 VERSION OUT.deb" >&2; exit 2; }
version=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
files=$here/files
maintainer=${DEB_MAINTAINER:-iotauth maintainers <maintainers@iotauth.example>}
homepage=${DEB_HOMEPAGE:-https://github.com/iotauth/iotauth}
for tool in dpkg-deb dpkg-shlibdeps strip go; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found: run scripts/deb/deps.sh (make deb does)" >&2; exit 1; }
done
arch=$(dpkg --print-architecture)

work=$(mktemp -d "${TMPDIR:-/tmp}/iotauth-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022

# The C shim's hash joins CGO_CFLAGS so that Go's cache sees edits to c/*.c (as in the Makefile).
shim=$(cat "$repo"/c/* | sha256sum | cut -c1-16)
hardening=(-trimpath -ldflags "-X main.version=$version -linkmode=external -extldflags=-Wl,-z,relro,-z,now")
plugin=$work/iotauth.so bin=$work/iotauth
(cd "$repo" &&
  CGO_CFLAGS="-O2 -g -DIOTAUTH_SHIM_HASH=$shim" CGO_CPPFLAGS="-D_FORTIFY_SOURCE=2" \
  CGO_LDFLAGS="-Wl,-z,relro,-z,now" go build -buildmode=c-shared "${hardening[@]}" -o "$plugin" ./plugin &&
  go build -buildmode=pie "${hardening[@]}" -o "$bin" ./cmd/iotauth)
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/mosquitto" "$root/lib/systemd/system" \
  "$root/etc/iotauth" "$root/etc/mosquitto/conf.d" "$root/usr/share/doc/iotauth"

# Binaries, stripped as dh_strip does (debug symbols are not shipped).
install -m 0755 "$bin" "$root/usr/bin/iotauth"
install -m 0644 "$plugin" "$root/usr/lib/mosquitto/iotauth.so"
strip --remove-section=.comment --remove-section=.note "$root/usr/bin/iotauth"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/lib/mosquitto/iotauth.so"

install -m 0644 "$files/iotauth.service" "$root/lib/systemd/system/iotauth.service"
install -m 0640 "$files/iotauth.env" "$root/etc/iotauth/iotauth.env"
install -m 0644 "$files/iotauth.conf.example" "$root/etc/mosquitto/conf.d/iotauth.conf.example"
install -m 0644 "$repo/docs/packaging.md" "$root/usr/share/doc/iotauth/packaging.md"
for s in postinst prerm postrm; do install -m 0755 "$files/$s" "$root/DEBIAN/$s"; done
printf '%s\n' /etc/iotauth/iotauth.env /etc/mosquitto/conf.d/iotauth.conf.example >"$root/DEBIAN/conffiles"

# changelog.gz (a native package's name for it), dated by the commit for reproducible builds.
describe=$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo "$version")
date=$(date -R -d "@$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)")
sed -e "s|@VERSION@|$version|" -e "s|@DESCRIBE@|$describe|" -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@DATE@|$date|" "$files/changelog.in" | gzip -9n >"$root/usr/share/doc/iotauth/changelog.gz"

"$here/copyright.sh" "$repo" "$bin" "$plugin" >"$root/usr/share/doc/iotauth/copyright"

# Shared-library dependencies (libc) of both binaries, the way debhelper gets them.
mkdir -p "$work/debian"
printf 'Source: iotauth\n\nPackage: iotauth\nArchitecture: any\n' >"$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e"$root/usr/bin/iotauth" -e"$root/usr/lib/mosquitto/iotauth.so" 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build.sh: dpkg-shlibdeps found no library dependency" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$depends|" -e "s|@HOMEPAGE@|$homepage|" \
  "$files/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\n' | LC_ALL=C sort |
  xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles" "$root/DEBIAN/control"

mkdir -p "$(dirname "$out")"
SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s) \
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
