#!/usr/bin/env bash
# The README's test command: installs the real clients the tests drive (mosquitto_pub,
# Eclipse Paho for Python, jsonschema, curl, libcoap's coap-client, Node.js with npm for MQTT.js, pytest
# for gmqtt's MQTT 5 suite) when they are missing, then runs every test in the workspace and the
# browser tests of the console (console/run-e2e.sh). The MQTT.js test runs `npm ci` in
# interop/mqttjs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# coap-client (crates/wulian/tests/coap_e2e.rs); Debian names the TLS-less build coap-client-notls.
command -v coap-client >/dev/null 2>&1 || command -v coap-client-notls >/dev/null 2>&1 || need_apt+=(libcoap3-bin)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "Installing ${need_apt[*]} (apt-get)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import paho.mqtt' >/dev/null 2>&1; then
  echo "Installing paho-mqtt (pip)..."
  python3 -m pip install --quiet 'paho-mqtt>=2,<3' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'paho-mqtt>=2,<3'
fi
# JSON Schema validation of the GBFS feeds against the official schemas (bike-share tests).
if ! python3 -c 'import jsonschema' >/dev/null 2>&1; then
  echo "Installing jsonschema (pip)..."
  python3 -m pip install --quiet 'jsonschema>=4,<5' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'jsonschema>=4,<5'
fi
# gmqtt's MQTT 5 suite (crates/wulian/tests/gmqtt_suite.rs downloads gmqtt's sdist itself).
if ! python3 -c 'import pytest, pytest_asyncio, pytest_timeout' >/dev/null 2>&1; then
  echo "Installing pytest, pytest-asyncio, pytest-timeout (pip)..."
  pytest_pkgs=('pytest==8.3.4' 'pytest-asyncio==0.24.0' 'pytest-timeout==2.3.1')
  python3 -m pip install --quiet "${pytest_pkgs[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "${pytest_pkgs[@]}"
fi

cargo test --workspace --locked "$@"

# The web console and the rider app in a real browser (headless system Chromium driven by
# Playwright) against the real binary running `wulian demo`; installs chromium and npm
# dependencies when missing.
console/run-e2e.sh
