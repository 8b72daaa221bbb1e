#!/usr/bin/env bash
# Python client compatibility suite (confluent-kafka + kafka-python) against a fresh gregor.
# Creates/uses compat/python/.venv, installs requirements.txt, runs pytest -q.
#
# Usage:  compat/python/run.sh [pytest args...]     e.g. -k confluent, -x, -v
# Env:    GREGOR_BIN   broker binary (default <repo>/target/release/gregor)
#         PYTHON       interpreter for the venv (default python3)
#         KEEP_WORK=1  keep the brokers' temp data dirs
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export GREGOR_BIN="${GREGOR_BIN:-$REPO/target/release/gregor}"
PYTHON="${PYTHON:-python3}"
VENV="$HERE/.venv"

if [ ! -x "$GREGOR_BIN" ]; then
    echo "[python-compat] gregor binary not found at $GREGOR_BIN (cargo build --release)" >&2
    exit 2
fi

# (Re)create the venv when missing or when requirements.txt changed since the last install.
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[python-compat] preparing venv at $VENV" >&2
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 needs the python3-venv package for ensurepip.
        if command -v apt-get >/dev/null 2>&1; then
            SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo -n"
            $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq python3-venv >/dev/null
        fi
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    timeout 600 "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$HERE/requirements.txt"
    echo "$want" >"$stamp"
fi

cd "$HERE"
# -q plus -rfEsxX: one line per failure/error/skip/xfail/xpass in the summary.
exec timeout --kill-after=10 900 "$VENV/bin/python" -m pytest -q -rfEsxX "$@"
