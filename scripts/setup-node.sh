#!/usr/bin/env bash
# Install the Node packages of the Yjs interop tests (tests/js: yjs, y-websocket, ws, pinned by
# tests/js/package-lock.json) into tests/js/node_modules with `npm ci`.
#
# Idempotent: does nothing when node_modules was installed from the current lockfile (a stamp
# holds the lockfile's hash). Called by scripts/ci-setup.sh (so by `make test`), and by the
# interop tests themselves when the stamp is missing or stale. Concurrent calls (pytest
# workers) wait for each other on a lock. Without node/npm it says so and exits 0: the interop
# tests then skip with that reason. A failed install exits 1 with npm's output.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
js="$root/tests/js"
stamp="$js/node_modules/.hybridsync-lock-sha256"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup-node: node/npm not found; the Yjs interop tests will skip" >&2
    exit 0
fi

want="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)"
fresh() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }
if fresh; then
    exit 0
fi

# One installer at a time; the others wait, then find the stamp fresh.
exec 9>"$js/.setup-node.lock"
if command -v flock >/dev/null 2>&1; then
    flock -w 600 9
fi
if fresh; then
    exit 0
fi

echo "setup-node: npm ci in tests/js" >&2
log="$(mktemp)"
if ! (cd "$js" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "setup-node: npm ci failed" >&2
    exit 1
fi
rm -f "$log"
echo "$want" >"$stamp"
