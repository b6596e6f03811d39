#!/usr/bin/env bash
# Runs every lesson on the backend this environment is configured for, as a learner would, and
# keeps what the model said. The networked workflow (.github/workflows/lessons-on-phi.yml) runs it
# inside each dev container configuration; it runs anywhere `make setup` has run.
#
#   scripts/run-lessons.sh OUT_DIR [NOTEBOOK ...]      (default: every notebooks/*.ipynb)
#
# Into OUT_DIR:
#   doctor.txt           which backend, endpoint and model answered (`phihelpers doctor --start`)
#   NN_name.ipynb        each lesson executed top to bottom, outputs kept, errors too: for a
#                        teacher to read the real model's answers before a workshop
#   nbval.log, nbval.xml the verdict: every lesson under nbval (--nbval-lax: every cell must run
#                        without error; model text is never compared)
# Exit status: non-zero if doctor or nbval failed.
#
# The lessons see this environment's settings (PHI_BACKEND, PHI_MODEL, ...): pytest runs with
# --noconftest, because the test suite's conftest.py pins the notebooks to the stand-in model.
# Time limits are generous: on a CPU, a real Phi decodes a few tokens per second.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: scripts/run-lessons.sh OUT_DIR [NOTEBOOK ...]" >&2
    exit 2
fi
OUT=$1
shift
if [ $# -gt 0 ]; then
    NOTEBOOKS=("$@")
else
    NOTEBOOKS=(notebooks/*.ipynb)
fi
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
CELL_TIMEOUT=${PHI_LESSON_CELL_TIMEOUT:-1800}
mkdir -p "$OUT"
status=0

echo "==> which backend and model answer (doctor --start)"
if ! "$PY" -m phihelpers doctor --start 2>&1 | tee "$OUT/doctor.txt"; then
    status=1
fi

echo "==> executing ${#NOTEBOOKS[@]} lesson(s) into $OUT (outputs kept)"
"$PY" -m jupyter nbconvert --to notebook --execute --allow-errors \
    --ExecutePreprocessor.timeout="$CELL_TIMEOUT" --output-dir "$OUT" "${NOTEBOOKS[@]}" ||
    status=1

echo "==> every lesson under nbval"
# -c: the project's pytest settings (--nbval-lax, --nbval-current-env) for notebooks anywhere.
if ! "$PY" -m pytest -c pyproject.toml --noconftest -p no:cacheprovider --nbval-lax \
    --nbval-cell-timeout="$CELL_TIMEOUT" --timeout=$((CELL_TIMEOUT * 2)) \
    --junitxml="$OUT/nbval.xml" "${NOTEBOOKS[@]}" 2>&1 |
    tee "$OUT/nbval.log"; then
    status=1
fi

"$PY" -m phihelpers stop >/dev/null 2>&1 || true
if [ "$status" -eq 0 ]; then
    echo "==> every lesson ran; executed notebooks in $OUT"
else
    echo "==> something failed (see $OUT/doctor.txt and $OUT/nbval.log); executed notebooks in $OUT"
fi
exit "$status"
