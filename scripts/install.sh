#!/usr/bin/env bash
# Installs what an operator host needs to run backups and restores, in one command:
#   ./scripts/install.sh [--no-system] [--venv DIR]
# The Debian packages the engine calls (PostgreSQL client tools; no servers), then a virtualenv
# holding the project and its runtime dependencies only (pyproject.toml's `dependencies`: no test,
# lint or CDK tools; `make install` is the developer's install). Run it again after an update.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="$repo/.venv"
system=yes
synopsis="usage: $0 [--no-system] [--venv DIR]"

usage() {
  cat <<EOF
$synopsis

Installs the Debian packages backups and restores need when they are missing (postgresql-client,
and python3-venv when needed; with sudo unless run as root), then creates a virtualenv (default
$repo/.venv) and installs questboard-backup into it with its runtime dependencies only.

  --no-system  do not install Debian packages (only warn about missing tools)
  --venv DIR   create or update the virtualenv in DIR instead of $repo/.venv
  -h, --help   show this help and exit
Environment: PYTHON picks the interpreter (default python3; 3.11 or newer).
EOF
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-system) system=no ;;
    --venv)
      [ "$#" -ge 2 ] || { echo "$0: --venv needs a folder ($synopsis)" >&2; exit 2; }
      venv="$2"
      shift
      ;;
    *) echo "$0: unknown argument $1 ($synopsis)" >&2; exit 2 ;;
  esac
  shift
done
venv="$(mkdir -p "$(dirname "$venv")" && cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"

install_system_packages() {
  local missing=()
  command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client)
  if [ ! -x "$venv/bin/python" ] && ! "$python" -c "import ensurepip" >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  [ "${#missing[@]}" -gt 0 ] || return 0
  if [ "$system" = no ]; then
    echo "warning: not installing ${missing[*]} (--no-system); PostgreSQL backups and restores need pg_dump, psql and pg_restore" >&2
    return 0
  fi
  local sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: installing ${missing[*]} needs root or sudo" >&2; exit 2; }
    sudo_cmd=(sudo)
  fi
  echo "installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "error: questboard-backup needs Python 3.11 or newer as $python (set PYTHON to another interpreter)" >&2
  exit 2
}
installed=""
if [ -x "$venv/bin/python" ]; then
  installed="$("$venv/bin/python" -m pip show questboard-backup 2>/dev/null || true)"
fi
if grep -q '^Editable project location:' <<<"$installed"; then
  # A non-editable install would replace the developer's editable one there.
  echo "error: $venv is a development virtualenv (editable install); pass --venv DIR for the runtime one" >&2
  exit 2
fi

install_system_packages
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# Built from a copy of the sources: pip builds in the source tree, and the checkout should get no
# build/ or egg-info leftovers (nor two installs racing in it).
source_copy="$(mktemp -d)"
trap 'rm -rf "$source_copy"' EXIT
cp -R "$repo/pyproject.toml" "$repo/questboard_backup" "$source_copy/"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$source_copy"

cli="$venv/bin/questboard-backup"
echo "installed $("$cli" --version) in $venv"
echo "  CLI: $cli"
if [ "$venv" != "$repo/.venv" ]; then
  # scripts/backup.sh runs $repo/.venv's CLI, else the one on PATH.
  echo "  add $venv/bin to PATH for scripts/backup.sh to find it"
fi
echo "next: settings in the environment or $repo/.env (see README), then: cd $repo && ./scripts/backup.sh status"
