#!/usr/bin/env bash
# The API against its own document: an agent on the examples, an admin key,
# and schemathesis over every route (`make test` runs this). It fails on any
# 5xx and on any answer (status, content type, body) the document does not
# allow. The virtual environment is made once, in target/schemathesis-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${NEXUSD:-target/debug/nexusd}
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/st" ] || ! cmp -s tests/schemathesis/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/schemathesis/requirements.txt
  cp tests/schemathesis/requirements.txt "$venv/requirements.txt"
fi

work=$(mktemp -d)
agent=
cleanup() {
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" admin --data-dir "$work/data" create-user fuzz --role admin >/dev/null
key=$("$bin" admin --data-dir "$work/data" create-user-key fuzz 2>/dev/null | grep -o 'nxk_[A-Za-z0-9_]*' | head -n1)
"$bin" serve --data-dir "$work/data" --config-dir workflows.example \
  --listen "127.0.0.1:$port" >"$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 1 100); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null && break
  kill -0 "$agent" 2>/dev/null || { cat "$work/agent.log"; exit 1; }
  sleep 0.1
done

status=0
SCHEMATHESIS_HOOKS=hooks PYTHONPATH=tests/schemathesis "$venv/bin/st" --no-color run \
  "http://127.0.0.1:$port/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases coverage,fuzzing \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
  --seed 1 \
  --request-timeout 10 \
  --generation-database none \
  --workers 1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- the agent's log (last 40 lines)"
  tail -n 40 "$work/agent.log"
fi
exit "$status"
