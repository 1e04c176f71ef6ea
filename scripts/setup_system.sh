#!/usr/bin/env bash
# System-level setup for tagrec (issue 2): the Debian packages and data the project needs that
# pip cannot install.
#
#   bash scripts/setup_system.sh [--wordnet-only] [DATA_HOME]
#
#   1. WordNet 3.0 (Debian `wordnet-base`, `wordnet-sense-index` -> /usr/share/wordnet)
#   2. the openclipart corpus (Debian `openclipart-svg`, `openclipart-png`, fetched with
#      `apt-get download` and unpacked with `dpkg -x` so it lands at
#      DATA_HOME/sources/openclipart/usr/share/openclipart/{svg,png}); skipped by --wordnet-only
#   3. WordNet for nltk, once for the whole machine: the first writable folder on nltk's search
#      path, ~/nltk_data for most users, or $NLTK_DATA (tagrec_models.paths.nltk_data_home;
#      tagrec_models.vocabulary.wordnet.install_wordnet: real copies plus the generated `lexnames`
#      file), verified with nltk. Every data home shares it; tagrec also installs it there on first
#      need, so this step only saves that first wait.
#
# DATA_HOME defaults to $TAGREC_HOME, else ./data. Idempotent: what is already there is reused;
# `apt-get update` runs only when a package has no install candidate or a fetch fails. Every
# unpack happens in a temporary folder and is moved into place in one rename, so an interrupted
# run never leaves a half-unpacked corpus that a later run would mistake for a finished one.
# Python: $PYTHON if set, else the repository's .venv, else python3 (it needs nltk).
set -euo pipefail

die() { echo "setup_system: error: $*" >&2; exit 1; }
log() { echo "setup_system: $*"; }

WORDNET_ONLY=0
POSITIONAL=()
for arg in "$@"; do
  case "$arg" in
    --wordnet-only) WORDNET_ONLY=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) die "unknown option '$arg' (known: --wordnet-only)" ;;
    *) POSITIONAL+=("$arg") ;;
  esac
done
[ "${#POSITIONAL[@]}" -le 1 ] || die "expected at most one DATA_HOME argument, got: ${POSITIONAL[*]}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_HOME="${POSITIONAL[0]:-${TAGREC_HOME:-data}}"
mkdir -p "$DATA_HOME" || die "cannot create data home '$DATA_HOME'"
DATA_HOME="$(cd "$DATA_HOME" && pwd)"
if [ -n "${PYTHON:-}" ]; then
  :
elif [ -x "$REPO/.venv/bin/python" ]; then
  PYTHON="$REPO/.venv/bin/python"
else
  PYTHON=python3
fi

WORDNET_PACKAGES=(wordnet-base wordnet-sense-index)
TMP_DIRS=()
cleanup() {
  local d
  for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf "$d"; done
}
trap cleanup EXIT
OPENCLIPART_KINDS=(svg png)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@" || die "'$*' needs root and 'sudo -n' failed; run this script as root"
  else
    die "'$*' needs root; run this script as root"
  fi
}

APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq || die "apt-get update failed (is the Debian mirror reachable?)"
    APT_UPDATED=1
  fi
}

# Run `apt-get update` only when some package has no install candidate in the current lists
# (a fresh container has empty lists).
apt_update_if_needed() {
  local pkg candidate
  for pkg in "$@"; do
    candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
      apt_update
      return
    fi
  done
}

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

install_wordnet_packages() {
  local missing=() pkg
  for pkg in "${WORDNET_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ] && [ -f /usr/share/wordnet/data.noun ]; then
    log "WordNet packages already installed (/usr/share/wordnet)"
    return
  fi
  apt_update_if_needed "${missing[@]}"
  log "apt-get install ${missing[*]}"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; then
    # Stale lists name versions the mirror no longer has: refresh once and retry.
    [ "$APT_UPDATED" -eq 0 ] || die "apt-get install ${missing[*]} failed"
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" || die "apt-get install ${missing[*]} failed"
  fi
  [ -f /usr/share/wordnet/data.noun ] \
    || die "WordNet packages installed but /usr/share/wordnet/data.noun is missing"
}

fetch_openclipart() {
  local kind="$1"
  local pkg="openclipart-$kind"
  local dest="$DATA_HOME/sources/openclipart"
  local corpus="$dest/usr/share/openclipart"
  if [ -d "$corpus/$kind" ] && [ -n "$(ls -A "$corpus/$kind" 2>/dev/null)" ]; then
    log "reusing $corpus/$kind"
    return
  fi
  mkdir -p "$DATA_HOME/sources"
  local tmp
  # The temporary folder sits inside the data home so the final move is a rename on one
  # file system; the EXIT trap removes it whatever happens.
  tmp="$(mktemp -d "$DATA_HOME/sources/.openclipart-$kind.XXXXXX")"
  TMP_DIRS+=("$tmp")
  apt_update_if_needed "$pkg"
  log "apt-get download $pkg"
  # (As root apt warns that the download runs unsandboxed: harmless here.)
  if ! (cd "$tmp" && apt-get download -qq "$pkg"); then
    [ "$APT_UPDATED" -eq 0 ] || die "apt-get download $pkg failed"
    apt_update
    (cd "$tmp" && apt-get download -qq "$pkg") || die "apt-get download $pkg failed"
  fi
  local deb
  deb="$(ls "$tmp"/"$pkg"_*.deb 2>/dev/null | head -n 1)"
  [ -n "$deb" ] || die "apt-get download $pkg left no .deb in $tmp"
  log "dpkg -x $(basename "$deb")"
  dpkg -x "$deb" "$tmp/root" || die "dpkg -x $deb failed"
  [ -d "$tmp/root/usr/share/openclipart/$kind" ] \
    || die "$deb does not hold usr/share/openclipart/$kind (package layout changed?)"
  mkdir -p "$corpus" "$dest/usr/share/doc"
  if [ -d "$tmp/root/usr/share/doc/$pkg" ]; then
    rm -rf "$dest/usr/share/doc/$pkg"
    mv "$tmp/root/usr/share/doc/$pkg" "$dest/usr/share/doc/$pkg"
  fi
  rm -rf "${corpus:?}/$kind"  # an empty leftover folder; a non-empty one was reused above
  mv "$tmp/root/usr/share/openclipart/$kind" "$corpus/$kind" \
    || die "could not move the unpacked $kind corpus into $corpus"
  rm -rf "$tmp"
  log "openclipart $kind: $(find "$corpus/$kind" -name "*.$kind" | wc -l) files in $corpus/$kind"
}

install_nltk_wordnet() {
  log "WordNet for nltk, machine-wide (python: $PYTHON)"
  "$PYTHON" "$REPO/scripts/setup_wordnet.py" \
    || die "installing WordNet for nltk failed (see above)"
}

command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script needs a Debian system"
install_wordnet_packages
if [ "$WORDNET_ONLY" -eq 0 ]; then
  for kind in "${OPENCLIPART_KINDS[@]}"; do
    fetch_openclipart "$kind"
  done
fi
install_nltk_wordnet
log "done (data home: $DATA_HOME)"
