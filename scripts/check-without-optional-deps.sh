#!/usr/bin/env bash
# Checks that bayesagg configures, builds and passes its tests without the optional packages
# (libpng, libjpeg, RDKit, Boost), as on a machine that never installed them: runs the build in a
# private mount namespace (root, `unshare -m`) where their headers, unversioned libraries and
# CMake packages are hidden by overlayfs whiteouts. The rest of the machine is not affected.
# Usage (as root): [CTEST_ARGS="-R ..."] scripts/check-without-optional-deps.sh [BUILD_DIR=build-hidden]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-hidden}"
if [ "${BAYESAGG_IN_HIDDEN_NS:-}" != 1 ]; then
  exec env BAYESAGG_IN_HIDDEN_NS=1 unshare -m "$0" "$@"
fi
o="$(mktemp -d)"
hide() {  # hide DIR NAME...: an overlay of DIR with whiteouts for NAME...
  local dir=$1 tag
  shift
  tag=$(echo "$dir" | tr / _)
  mkdir -p "$o/$tag/upper" "$o/$tag/work"
  for n in "$@"; do
    mkdir -p "$(dirname "$o/$tag/upper/$n")"
    mknod "$o/$tag/upper/$n" c 0 0
  done
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$o/$tag/upper,workdir=$o/$tag/work" "$dir"
}
existing() {  # the NAMEs that exist in DIR
  local dir=$1
  shift
  for n in "$@"; do [ -e "$dir/$n" ] && echo "$n"; done
}
lib=/usr/lib/x86_64-linux-gnu
# shellcheck disable=SC2046
hide /usr/include $(existing /usr/include png.h pngconf.h pnglibconf.h libpng libpng16 jpeglib.h \
  jerror.h jmorecfg.h jpegint.h x86_64-linux-gnu/jconfig.h rdkit boost)
# shellcheck disable=SC2046
hide /usr/lib $(cd /usr/lib && ls libRDKit*.so 2>/dev/null || true)
# shellcheck disable=SC2046
hide "$lib" $(existing "$lib" libpng.so libpng16.so libpng.a libpng16.a libjpeg.so libjpeg.a) \
  $(cd "$lib" && ls -d cmake/Boost* cmake/boost* 2>/dev/null || true)
for f in /usr/include/png.h /usr/include/jpeglib.h /usr/include/rdkit /usr/include/boost; do
  if [ -e "$f" ]; then echo "check: $f is still visible" >&2; exit 1; fi
done
echo "check: libpng, libjpeg, RDKit and Boost headers and libraries hidden"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release | grep "bayesagg:"
cmake --build "$build" -j2
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure -j2 ${CTEST_ARGS:-}
