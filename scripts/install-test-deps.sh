#!/usr/bin/env bash
# Installs the system programs the test suite starts for real (redis-server; Java and Maven to
# build and run the Neo4j launcher in tests/neo4j-launcher; espeak-ng for voice), if missing.
# Uses apt-get when run as root (CI and these machines); otherwise says what to install.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
{ command -v java && command -v javac; } >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "The tests need: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
