# Sourced by the benchmark scripts: from the repository root, a release build, QUARRY (the
# binary; a QUARRY set by the caller is used as it is, without building), ROOT, TMP (removed
# on exit), GNU time checked, and median (the middle value).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
: "${CARGO_TARGET_DIR:=target}"
if [ -z "${QUARRY:-}" ]; then
    cargo build --release --quiet
    QUARRY="$(cd "$CARGO_TARGET_DIR" && pwd)/release/quarry"
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time; apt-get install time)" >&2; exit 2; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
