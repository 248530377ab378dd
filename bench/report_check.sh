#!/usr/bin/env bash
# Browser check of the HTML report: headless Chromium renders the demo report to
# reports/bench/report_check.png and the check fails on any console message.
#
#   bash bench/report_check.sh [REPORT.html]
#
# Without an argument it uses reports/demo/index.html, building it with
# `cohortlab demo demo` when missing; when the demo cannot produce a report it
# falls back to a clinical-only stand-in study (bench/report_check.py build-fallback).
# Installs Debian's chromium when it is missing. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "chromium not found: installing Debian's chromium"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi

REPORT="${1:-reports/demo/index.html}"
if [ ! -f "$REPORT" ]; then
    if [ -n "${1:-}" ]; then
        echo "error: $REPORT: no such report" >&2
        exit 1
    fi
    echo "no $REPORT: building the demo (cohortlab demo demo)"
    .venv/bin/cohortlab demo demo || true
    if [ ! -f "$REPORT" ]; then
        echo "the demo produced no report: building the clinical-only stand-in study"
        REPORT="$($PY bench/report_check.py build-fallback reports/bench/report_check_study | tail -n 1)"
    fi
fi

$PY bench/report_check.py render "$REPORT" reports/bench/report_check.png
