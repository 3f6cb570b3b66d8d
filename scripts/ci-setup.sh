#!/usr/bin/env bash
# Install what the integration tests need: the Node packages of the Yjs interop tests
# (scripts/setup-node.sh), chromium for the inspector's browser test (scripts/setup-browser.sh),
# and the system tools `ip` (iproute2) and `nft` (nftables) for the network-namespace
# partition tests (tests/integration/_netns.py, tests/integration/test_partitions.py;
# DESIGN.md §5).
#
# Called by `make test` (and so by .ci/run) before pytest. Idempotent and quiet when the tools
# are already there. Only root can create namespaces, so only root installs anything; anyone
# else gets a note and the namespace tests skip with their own reason. A failed install is not
# fatal here: the tests then skip and say which tool is missing.
set -uo pipefail

# Node packages of the Yjs interop tests (yjs, y-websocket); a failure shows in those tests.
bash "$(dirname "$0")/setup-node.sh" || echo "ci-setup: setup-node.sh failed" >&2

bash "$(dirname "$0")/setup-browser.sh"  # chromium for the inspector's browser test; never fatal

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)

if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ci-setup: not root, not installing ${need[*]} (namespace tests will skip)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci-setup: no apt-get, cannot install ${need[*]} (namespace tests will skip)" >&2
    exit 0
fi

echo "ci-setup: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
        >/tmp/hybridsync-ci-setup.log 2>&1; then
    echo "ci-setup: installing ${need[*]} failed (see /tmp/hybridsync-ci-setup.log);" \
         "namespace tests will skip" >&2
fi
exit 0
