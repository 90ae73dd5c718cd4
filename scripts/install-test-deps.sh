#!/usr/bin/env bash
# Installs what the test suite needs outside Python: the npm test servers (cosmosdb-server, azurite)
# and, when run as root, Chromium, LibreOffice and poppler from Debian. Idempotent: a second run
# only checks and prints what it found. Browsers come from Debian, never from `playwright install`.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=tests/servers

say() { echo "==> $*"; }

apt_updated=0
apt_install() {  # one `apt-get update` per run, only when something is missing
  if [ "$apt_updated" = 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@"
}

# npm test servers -------------------------------------------------------------------------------
npm_stamp="$SERVERS/node_modules/.castiel-lock-sha256"
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "node/npm missing: installing Debian's nodejs and npm"
    apt_install nodejs npm
  else
    echo "node and npm are needed for the Cosmos DB and Azurite test servers: install nodejs (>= 20) and npm" >&2
    exit 1
  fi
fi
lock_sum=$(sha256sum "$SERVERS/package-lock.json" | cut -c1-64)
if [ -f "$npm_stamp" ] && [ "$(cat "$npm_stamp")" = "$lock_sum" ] \
   && [ -f "$SERVERS/node_modules/@vercel/cosmosdb-server/package.json" ] \
   && [ -f "$SERVERS/node_modules/azurite/package.json" ]; then
  say "npm test servers already installed in $SERVERS/node_modules"
else
  say "installing npm test servers in $SERVERS (npm ci)"
  (cd "$SERVERS" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$npm_stamp"
fi

# Debian packages (root only) ------------------------------------------------------------------
# command -> package; poppler-utils gives pdftoppm, the LibreOffice packages give soffice.
declare -A NEED_CMD=(
  [chromium]=chromium
  [pdftoppm]=poppler-utils
)
# fonts-noto-color-emoji: the status marks in the console's tables, so e2e screenshots show them, not boxes
NEED_PKG=(libreoffice-writer-nogui libreoffice-impress-nogui fonts-dejavu-core fonts-noto-color-emoji)

missing=()
for cmd in "${!NEED_CMD[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED_CMD[$cmd]}")
done
for pkg in "${NEED_PKG[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ "${#missing[@]}" = 0 ]; then
  say "system packages present: chromium, LibreOffice (writer, impress), poppler-utils, fonts (DejaVu, Noto emoji)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing system packages: ${missing[*]}"
  apt_install "${missing[@]}"
else
  say "not root: skipping system packages ${missing[*]} (tests that need them will skip outside CI)"
fi
