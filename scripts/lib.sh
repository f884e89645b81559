# Sourced by scripts/services and scripts/test.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

# Create .venv and install tests/requirements.txt unless the stamp says it is current.
ensure_venv() {
  local req="$ROOT/tests/requirements.txt" stamp="$VENV/.requirements.sha256" want
  want="$( { cat "$req"; python3 --version; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "setting up $VENV from tests/requirements.txt" >&2
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
}

# Debian's redis-server, for the Splunk sink's Redis dedup-ledger tests (they start
# their own instance on a free port). Installed once if missing.
ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  echo "installing redis-server (Debian package) for the Redis ledger tests" >&2
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
}
