#!/usr/bin/env bash
# Installs the system programs the test suite starts for real (redis-server; Java and Maven to
# build and run the Neo4j launcher in tests/neo4j-launcher; espeak-ng for voice; chromium for
# the browser tests; Home Assistant), if missing.
# Uses apt-get when run as root (CI and these machines); otherwise says what to install.
set -euo pipefail
# Home Assistant for the home-backend tests: PyPI `homeassistant` in a virtual environment of its
# own (it needs Python 3.13; Denis stays on its own Python), at the path tests/servers.py looks in
# (HA_VENV there). Skipped when that environment exists and imports; takes minutes when not.
install_home_assistant() {
  local version=2025.4.4 frontend=20250411.0  # the frontend release that version pins
  local venv="${DENIS_TEST_CACHE:-$HOME/.cache/denis-tests}/ha-$version" py=""
  if [ -f "$venv/.ready" ] && "$venv/bin/python" -c 'import homeassistant, hass_frontend' 2>/dev/null; then
    return 0
  fi
  # (a pyenv shim named python3.13 may exist and still refuse to run: try each one)
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 python3.13; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      py=$(command -v "$candidate"); break
    fi
  done
  if [ -z "$py" ]; then
    echo "The Home Assistant tests need Python 3.13 (python3.13 not found)" >&2
    [ "${CI:-}" = "true" ] && exit 1
    return 0
  fi
  echo "Installing Home Assistant $version for the tests in $venv (takes a few minutes)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "homeassistant==$version" "home-assistant-frontend==$frontend" "pycares<5"
  "$venv/bin/python" -c 'import homeassistant, hass_frontend'
  touch "$venv/.ready"
}
install_home_assistant

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
{ command -v java && command -v javac; } >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the browser tests (Playwright drives it)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "The tests need: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
