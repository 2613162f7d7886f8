#!/usr/bin/env bash
# Renders a Candor HTML report (`candor report --format html`) with headless Chromium and checks
# that a browser really shows it:
#   (a) Chromium exits with status 0 and writes the screenshot;
#   (b) the screenshot is not a blank page (it has many distinct colours: a tiny PNG decoder in
#       Python, zlib only), and the rendered DOM holds the page's <svg> diagrams and tables;
#   (c) the page logged nothing to the console. A report has no script and loads nothing, so any
#       console line (an uncaught error, a failed resource load) is a failure. Chromium's own noise
#       on stderr (D-Bus, GPU, sandbox warnings) is ignored: only its `:CONSOLE` log lines count;
#   (d) the file is self-contained: no URL, src, href, url() or @import (a missing image would not
#       show on the console, so this is checked in the file itself).
#
# Usage: scripts/check-html-report.sh REPORT.html OUT.png
# Needs /usr/bin/chromium (Debian: apt-get update && apt-get install -y chromium).
# Exit status: 0 all checks pass, 1 a check failed, 2 bad usage or Chromium missing.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 REPORT.html OUT.png" >&2
    exit 2
fi
report=$1
png=$2
chromium=/usr/bin/chromium
if [ ! -x "$chromium" ]; then
    echo "error: $chromium not found; install it with: apt-get update && apt-get install -y chromium" >&2
    exit 2
fi
if [ ! -f "$report" ]; then
    echo "error: $report: no such file" >&2
    exit 2
fi

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
url="file://$(realpath "$report")"
rm -f "$png"

# Chromium flags: headless, no network of its own, a throw-away profile.
browse() {
    timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d -p "$work")" --window-size=1400,3000 \
        --enable-logging=stderr --v=0 "$@" "$url"
}

# (a) the screenshot.
if ! browse --screenshot="$png" >"$work/screenshot.out" 2>"$work/screenshot.err"; then
    tail -n 20 "$work/screenshot.err" >&2
    fail "chromium exited with an error while taking the screenshot of $report"
fi
[ -s "$png" ] || fail "chromium wrote no screenshot to $png"

# (b) not blank: distinct colours of the decoded screenshot.
colours=$(python3 - "$png" <<'PY'
import struct, sys, zlib

def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)

data = open(sys.argv[1], "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("not a PNG file")
pos, idat = 8, b""
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
channels = {2: 3, 6: 4}.get(colour_type)
if depth != 8 or channels is None:
    sys.exit(f"unsupported PNG (bit depth {depth}, colour type {colour_type})")
raw = zlib.decompress(idat)
stride = width * channels
previous = bytearray(stride)
seen = set()
for y in range(height):
    kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        left = row[i - channels] if i >= channels else 0
        up, corner = previous[i], (previous[i - channels] if i >= channels else 0)
        if kind == 1:
            row[i] = (row[i] + left) & 255
        elif kind == 2:
            row[i] = (row[i] + up) & 255
        elif kind == 3:
            row[i] = (row[i] + ((left + up) >> 1)) & 255
        elif kind == 4:
            row[i] = (row[i] + paeth(left, up, corner)) & 255
    if y % 4 == 0:
        seen.update(bytes(row[x:x + 3]) for x in range(0, stride, channels * 2))
    previous = row
print(len(seen))
PY
) || fail "could not decode $png"
if [ "$colours" -lt 64 ]; then
    fail "$png looks blank: only $colours distinct colours"
fi

# (b) the diagrams and tables are in the rendered DOM, as many as the file has.
browse --dump-dom >"$work/dom.html" 2>"$work/dom.err" || fail "chromium exited with an error while dumping the DOM"
count() { grep -o "$1" "$2" | wc -l || true; }  # grep finds nothing: 0, not an exit
expected_svgs=$(count '<svg' "$report")
rendered_svgs=$(count '<svg' "$work/dom.html")
rendered_tables=$(count '<table' "$work/dom.html")
[ "$rendered_svgs" -eq "$expected_svgs" ] || fail "the DOM has $rendered_svgs <svg> elements, the file $expected_svgs"
[ "$rendered_svgs" -gt 0 ] || fail "no <svg> diagram in $report"
[ "$rendered_tables" -gt 0 ] || fail "no <table> in the rendered DOM"

# (c) no console output from the page (Chromium's log lines look like `[pid:tid:time:INFO:CONSOLE:1] "..."`).
if grep -hE ':CONSOLE[:(]|Uncaught' "$work/screenshot.err" "$work/dom.err" >"$work/console.txt"; then
    cat "$work/console.txt" >&2
    fail "the page logged to the console (above)"
fi

# (d) self-contained.
if grep -noE 'https?:|src=|href=|url\(|@import' "$report" >"$work/references.txt"; then
    head -n 5 "$work/references.txt" >&2
    fail "$report refers to something outside itself (above: line:match)"
fi

echo "ok: $report renders ($colours colours in $png, $rendered_svgs diagrams, $rendered_tables tables, no console output)"
