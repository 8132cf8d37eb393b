# shellcheck shell=bash
# Shared helpers for the dev/CI scripts in this directory. Sourced, not executed.
#
# All mutable state (Python venv, moto and garage pid/log files, garage config,
# data and keys) lives outside the repository, in $RETENTIOND_DEV_HOME.

RETENTIOND_DEV_HOME="${RETENTIOND_DEV_HOME:-$HOME/.local/share/retentiond-dev}"
export RETENTIOND_DEV_HOME
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$RETENTIOND_DEV_HOME/venv"

# Short progress line on stderr, prefixed with the calling script's name.
say() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Runs a command as the postgres OS user (for the local socket, peer auth).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

# True when something answers HTTP on the URL (any status code counts).
http_answers() {
  local code
  code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true)"
  [ -n "$code" ] && [ "$code" != "000" ]
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every half second.
wait_until() {
  local timeout="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# Starts a long-running command fully detached from the caller: own session,
# no inherited stdin/stdout/stderr (so a CI runner that waits for the pipes to
# close does not hang on it), pid written to PIDFILE.
# start_detached PIDFILE LOGFILE CMD...
start_detached() {
  local pidfile="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  setsid nohup "$@" </dev/null >>"$logfile" 2>&1 &
  echo $! >"$pidfile"
}

# True when the pid in PIDFILE is a live process (zombies count as dead).
pid_alive() {
  local pid stat
  [ -f "$1" ] || return 1
  pid="$(cat "$1" 2>/dev/null || true)"
  [ -n "$pid" ] || return 1
  stat="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
  [ -n "$stat" ] && [ "${stat:0:1}" != Z ]
}

# ensure_daemon NAME URL PIDFILE LOGFILE CMD...: makes sure something answers
# HTTP on URL, starting CMD detached when nothing does. A process from an
# earlier start that is still coming up (or going down) gets 15s first.
ensure_daemon() {
  local name="$1" url="$2" pidfile="$3" logfile="$4"
  shift 4
  if http_answers "$url"; then
    say "$name answers at $url"
    return 0
  fi
  if pid_alive "$pidfile"; then
    say "$name (pid $(cat "$pidfile")) is running but not answering yet: waiting"
    wait_until 15 "$name at $url" http_answers "$url" 2>/dev/null || true
  fi
  if ! http_answers "$url"; then
    if pid_alive "$pidfile"; then
      die "$name (pid $(cat "$pidfile")) runs but does not answer at $url; see $logfile, or stop it"
    fi
    # Keep the previous log, start a fresh one.
    [ -f "$logfile" ] && mv -f "$logfile" "$logfile.1"
    say "starting $name for $url (log: $logfile)"
    start_detached "$pidfile" "$logfile" "$@"
    if ! wait_until 60 "$name at $url" http_answers "$url"; then
      tail -n 30 "$logfile" >&2 || true
      return 1
    fi
  fi
  say "$name answers at $url (pid $(cat "$pidfile"))"
}

# Creates $VENV and installs scripts/requirements-dev.txt into it; reinstalls
# only when that file changed since the last install.
ensure_venv() {
  local reqs="$REPO_ROOT/scripts/requirements-dev.txt" stamp="$VENV/.requirements.sha256" want
  mkdir -p "$RETENTIOND_DEV_HOME"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      say "python3 -m venv failed: installing python3-venv"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    fi
  fi
  want="$(sha256sum "$reqs" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    say "installing $(grep -v '^#' "$reqs" | xargs) into the venv"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
    echo "$want" >"$stamp"
  fi
}
