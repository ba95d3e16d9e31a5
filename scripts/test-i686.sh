#!/usr/bin/env bash
# The whole suite on 32-bit Linux (i686-unknown-linux-gnu), run natively: unit, integration and
# doc tests, examples built. 32-bit is where size arithmetic overflows first.
# Debian's gcc-multilib conflicts with the aarch64 cross compiler scripts/test-aarch64.sh needs,
# so this links with the host gcc (-m32) and the two packages gcc-multilib would pull in.
#   scripts/test-i686.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cross-suite.sh

have_nightly_build_std || { echo "skipped: i686 suite"; exit 0; }
need_packages libc6-dev-i386 "lib32gcc-$(gcc -dumpversion | cut -d. -f1)-dev" ||
    { echo "skipped: i686 suite"; exit 0; }
run_suite i686-unknown-linux-gnu
