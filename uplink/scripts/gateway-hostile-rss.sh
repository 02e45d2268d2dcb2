#!/bin/bash
# The gateway under anonymous bodies (issue 27): N storage-node processes on 127.0.N.1,
# `uplink gateway` on them, then CLIENTS concurrent unauthenticated browser-form POSTs
# (PostObject, `multipart/form-data`) each declaring and streaming SIZE_MIB of body, the
# way `curl -F file=@big http://127.0.0.1:7780/bucket` or a web page's form does. Prints
# what the clients got back, how many body bytes the gateway took in before answering,
# and the gateway's peak RSS (VmHWM) before and after.
#
#   uplink/scripts/gateway-hostile-rss.sh [NODES] [CLIENTS] [SIZE_MIB]
#   uplink/scripts/gateway-hostile-rss.sh 4 64 1024
#
# Needs storage-node and uplink in $BIN (default target/release) and python3.
set -u
N=${1:-4}
CLIENTS=${2:-64}
SIZE_MIB=${3:-1024}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$REPO/target/release}
ROOT=$(mktemp -d /tmp/shoal-gateway-hostile.XXXXXX)
. "$(dirname "$0")/lib-network.sh"

echo "# $(date -u +%FT%TZ) nodes=$N clients=$CLIENTS size=${SIZE_MIB}MiB load: $(cut -d' ' -f1-3 /proc/loadavg)"
A=$ROOT/owner; new_owner "$A"
$UP --config-dir "$A" gateway --listen 127.0.0.1:0 > "$ROOT/gateway.out" 2> "$ROOT/gateway.err" &
GW=$!; PIDS+=($GW)
for _ in $(seq 1 600); do grep -q "on http://" "$ROOT/gateway.out" 2>/dev/null && break; sleep 0.1; done
EP=$(sed -n 's/.*on http:\/\/\([0-9.:]*\).*/\1/p' "$ROOT/gateway.out" | head -1)
[ -n "$EP" ] || { echo "the gateway did not start"; cat "$ROOT/gateway.err"; exit 1; }
hwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$GW/status"; }
BEFORE=$(hwm)
python3 - "$EP" "$CLIENTS" "$SIZE_MIB" <<'PY'
import asyncio, sys, collections
host, port = sys.argv[1].rsplit(":", 1)
clients, size = int(sys.argv[2]), int(sys.argv[3]) << 20
CHUNK = b"\0" * (1 << 20)

async def one(i):
    r, w = await asyncio.open_connection(host, int(port))
    w.write((f"POST /bench HTTP/1.1\r\nHost: {host}\r\n"
             "Content-Type: multipart/form-data; boundary=xxxx\r\n"
             f"Content-Length: {size}\r\n\r\n").encode())
    sent = 0
    answer = asyncio.ensure_future(r.readline())
    try:
        while sent < size and not answer.done():
            w.write(CHUNK)
            await asyncio.wait_for(w.drain(), 30)
            sent += len(CHUNK)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    status = (await asyncio.wait_for(answer, 30)).decode(errors="replace").strip()
    w.close()
    return status, sent

async def main():
    got = await asyncio.gather(*(one(i) for i in range(clients)), return_exceptions=True)
    statuses = collections.Counter(g[0] if isinstance(g, tuple) else repr(g) for g in got)
    sent = [g[1] for g in got if isinstance(g, tuple)]
    print(f"answers: {dict(statuses)}")
    print(f"body bytes written by the clients before the answer: max {max(sent, default=0) >> 20} MiB, "
          f"total {sum(sent) >> 20} MiB (socket buffers included)")
asyncio.run(main())
PY
AFTER=$(hwm)
echo "gateway peak RSS (VmHWM): before $((BEFORE / 1024)) MiB, after $((AFTER / 1024)) MiB"
