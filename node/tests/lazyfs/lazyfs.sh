#!/usr/bin/env bash
# Build, mount and unmount LazyFS. See README.md beside this file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Build outputs stay beside the sources (ignored by git) unless LAZYFS_BUILD_DIR says otherwise.
out=${LAZYFS_BUILD_DIR:-$here/build}
bin=$out/lazyfs/build/lazyfs
case "${1:-}" in
  build)
    if [[ -x $bin ]]; then echo "$bin"; exit 0; fi
    if ! dpkg -s libfuse3-dev cmake libspdlog-dev libtoml11-dev fuse3 >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 libfuse3-dev cmake g++ libspdlog-dev libtoml11-dev >/dev/null
    fi
    rm -rf "$out"; mkdir -p "$out"; cp -r "$here/lazyfs" "$here/libs" "$out/"
    rm -rf "$out/lazyfs/build" "$out/libs/libpcache/build"
    log=$out/build.log
    { (cd "$out/libs/libpcache" && mkdir -p build && cd build && cmake .. && cmake --build . -j2) &&
      (cd "$out/lazyfs" && mkdir -p build && cd build && cmake -DLAZYFS_BUILD_TESTS=OFF .. && cmake --build . -j2); } >"$log" 2>&1 ||
      { tail -20 "$log" >&2; echo "lazyfs build failed (full log: $log)" >&2; exit 1; }
    echo "$bin" ;;
  mount)
    mnt=$2; root=$3; fifo=$4
    [[ -x $bin ]] || "$0" build >/dev/null
    mkdir -p "$mnt" "$root"
    cfg=$(mktemp --suffix=.toml)
    printf '[faults]\nfifo_path="%s"\n[cache]\napply_eviction=false\n[cache.simple]\ncustom_size="2gb"\nblocks_per_page=1\n[filesystem]\nlog_all_operations=false\nlogfile=""\n' "$fifo" >"$cfg"
    LD_LIBRARY_PATH="$out/libs/libpcache/build" "$bin" "$mnt" --config-path "$cfg" -o allow_other -o modules=subdir -o subdir="$root" >"$root.lazyfs.log" 2>&1 &
    for _ in $(seq 100); do mountpoint -q "$mnt" && [[ -p $fifo ]] && exit 0; sleep 0.1; done
    echo "lazyfs did not mount $mnt: $(tail -3 "$root.lazyfs.log")" >&2; exit 1 ;;
  umount)
    fusermount3 -u "$2" 2>/dev/null || umount -l "$2" ;;
  *) echo "usage: lazyfs.sh build | mount MNT ROOT FIFO | umount MNT" >&2; exit 2 ;;
esac
