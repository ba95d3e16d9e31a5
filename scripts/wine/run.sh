#!/usr/bin/env bash
# The cargo runner of scripts/test-windows.sh: runs one test binary or doctest under Wine,
# killed after 10 minutes.
#   WINE_BIN=/usr/lib/wine/wine64 scripts/wine/run.sh program.exe [args...]
#
# Wine 8 sometimes kills its own process on the way out: after the program has returned from
# main (it printed its last line), the Unix process dies of SIGSEGV, or of the SIGKILL that
# wineserver sends a process that is still there a second after ExitProcess. A std-only program
# that joins two threads and exits shows it as well (about 1 run in 400 with four running at
# once; never in single-threaded ones), so it is Wine's, not the program's. A fault inside the
# Windows program cannot end like that: Wine turns it into an exception, and the process exits
# with its NTSTATUS (0xC0000005, an access violation, is exit status 5; a Rust abort is 9).
# Rarer (4 times in about 3,000 runs of the same programs), Wine exits with status 1 having
# printed nothing at all, not even the first line of a test binary; cause not found. So a death
# by SIGSEGV or SIGKILL, or status 1 with no output, is run again, twice at most, with the
# earlier attempt's output dropped (and kept in the log below); every other status is passed on.
# Each retry is noted in $WINE_RETRY_LOG, which scripts/test-windows.sh reports.
set -u
wine=${WINE_BIN:?WINE_BIN must name the wine64 loader}
tries=3
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
for attempt in $(seq 1 "$tries"); do
    timeout 600 "$wine" "$@" >"$out" 2>"$err"
    status=$?
    case "$status" in
    137 | 139) why="died of signal $((status - 128))" ;;
    1) if [ -s "$out" ] || [ -s "$err" ]; then why=; else why="exited 1 with no output"; fi ;;
    *) why= ;;
    esac
    if [ -z "$why" ] || [ "$attempt" -eq "$tries" ]; then
        break
    fi
    {
        echo "== wine-run: $* $why, attempt $attempt of $tries; its output:"
        cat "$out" "$err"
    } >>"${WINE_RETRY_LOG:-/dev/null}"
    echo "wine-run: $1 $why under Wine; running it again" >&2
done
cat "$out"
cat "$err" >&2
exit "$status"
