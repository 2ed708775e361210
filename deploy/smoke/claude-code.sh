#!/usr/bin/env bash
# Opt-in check that the real Claude Code CLI works through crs (not part of `make test`: the npm
# package is large). Starts the mock Anthropic upstream and `crs dev` on free ports, creates a
# console account on the mock and a key, runs `claude -p` against the worker's /api base URL, and
# prints the transcript and what the mock received. Usage: make smoke-claude-code
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-./bin}
WORK=$(mktemp -d /tmp/crs-smoke-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# CLAUDE_BIN: an installed claude to use; otherwise the package is installed into the temp dir.
CLAUDE=${CLAUDE_BIN:-}
if [ -z "$CLAUDE" ]; then
  echo "installing @anthropic-ai/claude-code into $WORK/npm ..."
  mkdir -p "$WORK/npm"
  (cd "$WORK/npm" && npm install --no-audit --no-fund --silent @anthropic-ai/claude-code >/dev/null)
  CLAUDE="$WORK/npm/node_modules/.bin/claude"
fi
echo "claude: $("$CLAUDE" --version)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WPORT=$(free_port); GPORT=$(free_port); HPORT=$(free_port)
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

"$BIN/crs-mock" -addr 127.0.0.1:0 -deltas 5 > "$WORK/mock.out" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do grep -q "listening on" "$WORK/mock.out" && break; sleep 0.1; done
MOCK=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$WORK/mock.out" | head -1)

CRS_SERVER__HOST=127.0.0.1 CRS_SERVER__PORT=$WPORT CRS_CONTROL__HOST=127.0.0.1 \
CRS_CONTROL__GRPC_PORT=$GPORT CRS_CONTROL__HTTP_PORT=$HPORT CRS_SECURITY__ADMIN_TOKEN=$TOKEN \
CRS_STORE__DATA_DIR="$WORK/data" CRS_LOG__LEVEL=warn \
  "$BIN/crs" dev > "$WORK/crs.out" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HPORT/readyz" >/dev/null && break; sleep 0.1; done

A="http://127.0.0.1:$HPORT/admin/v1"; H=(-H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json')
curl -sf "${H[@]}" -X POST "$A/accounts" -d "{\"name\":\"mock\",\"type\":\"claude-console\",\"baseUrl\":\"http://$MOCK\",\"apiKey\":{\"apiKey\":\"sk-ant-smoke\"}}" >/dev/null
KEY=$(curl -sf "${H[@]}" -X POST "$A/api-keys" -d '{"name":"claude-code-smoke"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
sleep 1 # the worker's snapshot arrives within a second

echo "---- claude -p through crs ----"
set +e
HOME="$WORK/home" ANTHROPIC_BASE_URL="http://127.0.0.1:$WPORT/api" ANTHROPIC_API_KEY="$KEY" \
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 CLAUDE_CODE_MAX_RETRIES=1 \
  timeout 120 "$CLAUDE" -p "say hi" < /dev/null
rc=$?
set -e
echo "---- exit code: $rc ----"
echo "---- what the mock received ----"
curl -s "http://$MOCK/__requests" | python3 -c '
import json,sys
for r in json.load(sys.stdin):
    h=r["headers"]
    print(r["path"]+("?"+r["query"] if r["query"] else ""), "model="+r["model"], "stream="+str(r["stream"]),
          "ua="+h.get("user-agent",""), "x-app="+h.get("x-app",""), "cred="+r["credential"],
          "client-key-forwarded="+str(any("cr_" in v for v in h.values())))'
echo "---- usage recorded ----"
sleep 1
KID=$(curl -sf "${H[@]}" "$A/api-keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKeys"][0]["id"])')
curl -sf "${H[@]}" "$A/api-keys/$KID/usage?granularity=total" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["total"]))'
rm -rf "$WORK"
exit $rc
