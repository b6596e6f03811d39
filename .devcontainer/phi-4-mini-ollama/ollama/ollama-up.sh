#!/bin/sh
# ollama-up: start `ollama serve` in the background unless one is already running, then return.
#   ollama-up          the container's entrypoint (the feature's "entrypoint"): starts it, returns
#   ollama-up --wait   also waits until the server answers (postCreateCommand runs this before
#                      `ollama pull`, so a slow start never makes the pull fail)
# The server binds OLLAMA_HOST (127.0.0.1:11434, set by the feature) and logs to OLLAMA_UP_LOG.
set -u

LOG=${OLLAMA_UP_LOG:-${TMPDIR:-/tmp}/ollama-serve-$(id -u).log}
PIDFILE=${OLLAMA_UP_PIDFILE:-${TMPDIR:-/tmp}/ollama-serve-$(id -u).pid}
WAIT_SECONDS=${OLLAMA_UP_WAIT_SECONDS:-60}

answers() { ollama list >/dev/null 2>&1; }
running() {  # the process the pid file names is still an Ollama server (pids are reused)
    [ -f "$PIDFILE" ] && grep -qs ollama "/proc/$(cat "$PIDFILE")/cmdline"
}

if ! answers && ! running; then
    nohup ollama serve >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
fi

if [ "${1:-}" = "--wait" ]; then
    waited=0
    until answers; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            echo "ollama-up: the Ollama server did not answer within $WAIT_SECONDS s. Its log, $LOG:" >&2
            tail -n 20 "$LOG" >&2 2>/dev/null
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "ollama-up: Ollama answers on ${OLLAMA_HOST:-127.0.0.1:11434}"
fi
exit 0
