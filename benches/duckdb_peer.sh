# Shared by backend.sh and measures.sh (sourced, after their usage comments): the binary and
# scratch directory (lib.sh, or $QUARRY as given), the run count, seed and sizes from the
# arguments, a Python with DuckDB for the peer, and the backend cache.
if [ -n "${QUARRY:-}" ]; then
    cd "$(dirname "$0")/.."; ROOT=$(pwd); TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
    median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
else
    source "$(dirname "$0")/lib.sh"
fi
RUNS=${RUNS:-3}
SEED=${SEED:-1}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
PY=${PEER_PYTHON:-python3}
if ! "$PY" -c 'import duckdb' 2>/dev/null; then
    venv="$HOME/.cache/quarry/bench-venv"
    "$venv/bin/python" -c 'import duckdb' 2>/dev/null || { python3 -m venv "$venv" && "$venv/bin/pip" install -q duckdb; }
    PY="$venv/bin/python"
fi
VTE="$ROOT/fixtures/projects/vte"
CACHE="${BACKEND_CACHE:-$HOME/.cache/quarry/backends}"
TIME=(/usr/bin/time -f '%e %M' -o "$TMP/time")
