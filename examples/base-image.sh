#!/bin/sh
# Builds the local base image the example apps start FROM, with no registry:
# busybox-static from Debian, imported as `gantry-examples/busybox:latest`.
# Usage: examples/base-image.sh   (needs docker; apt-get for busybox-static if missing)
set -eu
IMAGE=${1:-gantry-examples/busybox:latest}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE already exists"
  exit 0
fi
BUSYBOX=""
for candidate in /bin/busybox /usr/bin/busybox; do
  if [ -x "$candidate" ] && "$candidate" --list >/dev/null 2>&1 && ! ldd "$candidate" >/dev/null 2>&1; then
    BUSYBOX=$candidate
    break
  fi
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$BUSYBOX" ]; then
  (cd "$WORK" && apt-get download busybox-static >/dev/null && dpkg -x busybox-static_*.deb pkg)
  BUSYBOX="$WORK/pkg/bin/busybox"
fi
mkdir -p "$WORK/root/bin" "$WORK/root/tmp" "$WORK/root/etc"
cp "$BUSYBOX" "$WORK/root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$WORK/root/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$WORK/root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> "$WORK/root/etc/passwd"
tar -C "$WORK/root" -c . | docker import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
echo "built $IMAGE"
