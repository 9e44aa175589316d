#!/usr/bin/env bash
# A local Spark Connect server for quarry's `--engine spark` tests and benchmarks.
#
# Usage: scripts/spark-cluster.sh install|start|stop|status|logs
#
#   install  a Python venv with PySpark (Spark 4.x ships the Spark Connect server); needs a
#            Java 17 runtime (Debian: openjdk-17-jre-headless) and python3
#   start    starts the server (installing first if needed), listening on 127.0.0.1 only, and
#            waits until it accepts connections; prints the remote (sc://127.0.0.1:PORT)
#   stop     stops it
#   status   says whether it is running
#   logs     prints the end of its log
#
# Environment:
#   SPARK_VENV            the venv (default $HOME/.cache/quarry/spark-venv)
#   SPARK_RUN             pid file and logs (default $HOME/.cache/quarry/spark-run); logs are
#                         kept after stop so that failures can be read
#   SPARK_PORT            gRPC port (default 15002)
#   SPARK_MASTER          default local[2]
#   SPARK_DRIVER_MEMORY   default 2g
#   PYSPARK_VERSION       default 4.3.0
set -euo pipefail

SPARK_VENV=${SPARK_VENV:-$HOME/.cache/quarry/spark-venv}
SPARK_RUN=${SPARK_RUN:-$HOME/.cache/quarry/spark-run}
SPARK_PORT=${SPARK_PORT:-15002}
SPARK_MASTER=${SPARK_MASTER:-local[2]}
SPARK_DRIVER_MEMORY=${SPARK_DRIVER_MEMORY:-2g}
PYSPARK_VERSION=${PYSPARK_VERSION:-4.3.0}

export SPARK_LOG_DIR=$SPARK_RUN/logs SPARK_PID_DIR=$SPARK_RUN/pid SPARK_LOCAL_IP=127.0.0.1

die() { echo "spark-cluster: $*" >&2; exit 1; }

spark_home() {
    local py
    py=$(ls -d "$SPARK_VENV"/lib/python3*/site-packages/pyspark 2>/dev/null | head -n 1)
    [ -n "$py" ] && [ -x "$py/sbin/start-connect-server.sh" ] && echo "$py"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$SPARK_PORT") 2>/dev/null; }

install() {
    command -v java >/dev/null || die "no java on PATH: install a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)"
    if spark_home >/dev/null; then return; fi
    command -v python3 >/dev/null || die "no python3 on PATH"
    echo "spark-cluster: installing pyspark==$PYSPARK_VERSION into $SPARK_VENV (about 500 MB)" >&2
    python3 -m venv "$SPARK_VENV"
    "$SPARK_VENV/bin/pip" install --quiet --disable-pip-version-check "pyspark==$PYSPARK_VERSION"
    spark_home >/dev/null || die "pyspark installed, but $SPARK_VENV has no sbin/start-connect-server.sh"
}

start() {
    if listening; then
        echo "spark-cluster: something already listens on 127.0.0.1:$SPARK_PORT; using it" >&2
        echo "sc://127.0.0.1:$SPARK_PORT"
        return
    fi
    install
    local home
    home=$(spark_home)
    mkdir -p "$SPARK_LOG_DIR" "$SPARK_PID_DIR"
    rm -f "$SPARK_LOG_DIR"/*.out* "$SPARK_PID_DIR"/*.pid
    SPARK_HOME=$home "$home/sbin/start-connect-server.sh" --master "$SPARK_MASTER" \
        --driver-memory "$SPARK_DRIVER_MEMORY" \
        --conf spark.connect.grpc.binding.address=127.0.0.1 \
        --conf "spark.connect.grpc.binding.port=$SPARK_PORT" \
        --conf spark.ui.enabled=false \
        --conf spark.driver.bindAddress=127.0.0.1 --conf spark.driver.host=127.0.0.1 \
        --conf spark.sql.session.timeZone=UTC \
        >/dev/null
    local waited=0
    until listening; do
        if [ "$waited" -ge 180 ]; then
            logs >&2
            stop || true
            die "the server did not listen on 127.0.0.1:$SPARK_PORT within 180 s (log above)"
        fi
        if ! ls "$SPARK_PID_DIR"/*.pid >/dev/null 2>&1 || ! kill -0 "$(cat "$SPARK_PID_DIR"/*.pid)" 2>/dev/null; then
            logs >&2
            die "the server exited during start-up (log above)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "spark-cluster: Spark Connect listening on 127.0.0.1:$SPARK_PORT after ${waited}s (logs: $SPARK_LOG_DIR)" >&2
    echo "sc://127.0.0.1:$SPARK_PORT"
}

stop() {
    local home
    home=$(spark_home) || die "not installed ($SPARK_VENV)"
    SPARK_HOME=$home "$home/sbin/stop-connect-server.sh" >/dev/null 2>&1 || true
    local waited=0
    while listening && [ "$waited" -lt 30 ]; do sleep 1; waited=$((waited + 1)); done
    listening && die "still listening on 127.0.0.1:$SPARK_PORT after stop"
    echo "spark-cluster: stopped (logs kept in $SPARK_LOG_DIR)" >&2
}

status() {
    if listening; then echo "running: sc://127.0.0.1:$SPARK_PORT"; else echo "not running"; return 1; fi
}

logs() {
    local f
    for f in "$SPARK_LOG_DIR"/*.out; do
        [ -f "$f" ] || continue
        echo "--- $f (last 60 lines)"
        tail -n 60 "$f"
    done
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) status ;;
logs) logs ;;
*) echo "usage: $0 install|start|stop|status|logs" >&2; exit 2 ;;
esac
