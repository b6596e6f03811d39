#!/usr/bin/env bash
# Foundry Local in a codespace (.devcontainer/phi-4-mini-foundry-local): Microsoft's local runtime,
# which on Linux is the foundry-local-sdk library, serving Phi-4-mini on a fixed local address.
#
#   scripts/foundry-local.sh setup         a venv with the pinned SDK, then the model (once)
#   scripts/foundry-local.sh start [--wait] the service in the background, unless it answers;
#                                          --wait: until it lists a model (loading takes a while)
#   scripts/foundry-local.sh stop
#
# The lessons reach it with PHI_BACKEND=foundry-local and OPENAI_BASE_URL=$FOUNDRY_LOCAL_URL/v1.
# The SDK lives in its own venv, apart from the lessons' pinned .venv (it brings ONNX Runtime).
set -euo pipefail
cd "$(dirname "$0")/.."

SDK_VERSION=2.2.1
HOME_DIR=${FOUNDRY_LOCAL_HOME:-.cache/foundry-local}
FL_VENV="$HOME_DIR/venv"
LOG="$HOME_DIR/service.log"
PIDFILE="$HOME_DIR/service.pid"
export FOUNDRY_LOCAL_URL=${FOUNDRY_LOCAL_URL:-http://127.0.0.1:5273}
export FOUNDRY_LOCAL_CACHE=${FOUNDRY_LOCAL_CACHE:-$HOME_DIR/models}
WAIT_SECONDS=${FOUNDRY_LOCAL_WAIT_SECONDS:-600}
SERVICE=scripts/foundry_local_service.py

answers() {  # the service lists at least one model
    curl -fsS --max-time 5 "$FOUNDRY_LOCAL_URL/v1/models" 2>/dev/null | grep -q '"id"'
}
running() {  # the process the pid file names is still this service (pids are reused)
    [ -f "$PIDFILE" ] && grep -qs foundry_local_service "/proc/$(cat "$PIDFILE")/cmdline"
}

case "${1:-}" in
setup)
    mkdir -p "$HOME_DIR"
    if [ ! -x "$FL_VENV/bin/python" ]; then
        echo "==> creating $FL_VENV for foundry-local-sdk $SDK_VERSION"
        python3 -m venv "$FL_VENV"
    fi
    "$FL_VENV/bin/python" -m pip install --disable-pip-version-check -q "foundry-local-sdk==$SDK_VERSION"
    echo "==> the model, into $FOUNDRY_LOCAL_CACHE"
    "$FL_VENV/bin/python" "$SERVICE" download
    ;;
start)
    if ! answers && ! running; then
        mkdir -p "$HOME_DIR"
        nohup "$FL_VENV/bin/python" "$SERVICE" serve >>"$LOG" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
        echo "==> Foundry Local starting on $FOUNDRY_LOCAL_URL (log: $LOG)"
    fi
    if [ "${2:-}" = "--wait" ]; then
        waited=0
        until answers; do
            if ! running; then
                echo "Foundry Local stopped during start-up. Its log, $LOG:" >&2
                tail -n 20 "$LOG" >&2
                exit 1
            fi
            if [ "$waited" -ge "$WAIT_SECONDS" ]; then
                echo "Foundry Local did not list a model within $WAIT_SECONDS s. Its log, $LOG:" >&2
                tail -n 20 "$LOG" >&2
                exit 1
            fi
            sleep 2
            waited=$((waited + 2))
        done
        echo "==> Foundry Local answers on $FOUNDRY_LOCAL_URL/v1"
    fi
    ;;
stop)
    if running; then kill "$(cat "$PIDFILE")"; fi
    rm -f "$PIDFILE"
    ;;
*)
    echo "usage: scripts/foundry-local.sh setup | start [--wait] | stop" >&2
    exit 2
    ;;
esac
