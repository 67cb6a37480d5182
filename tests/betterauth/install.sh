#!/usr/bin/env bash
# Install the pinned better-auth package (and its dependencies) for the token-encryption
# interop tests into tests/.cache/better-auth (git-ignored). The tests and .ci/run both call it.
#
# package-lock.json pins every package to one version with its sha512 integrity; `npm ci`
# refuses any tarball whose hash differs and never updates the lock. Install scripts are not
# run. A second call with the same lock file returns at once. Concurrent calls (pytest-xdist
# workers) serialise on a lock file.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dest=${BETTER_AUTH_CACHE:-$here/../.cache/better-auth}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

command -v node >/dev/null 2>&1 || { echo "node is not installed" >&2; exit 3; }
command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 3; }

exec 9>"$dest.lock"
flock 9

if [ -f "$dest/.installed" ] && cmp -s "$here/package-lock.json" "$dest/.installed"; then
  exit 0
fi

rm -f "$dest/.installed"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
(
  cd "$dest"
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --cache "$dest/.npm-cache"
)
# The resolved version must be the pinned one (guards against an edited lock file).
want=$(node -p 'require(process.argv[1]).dependencies["better-auth"]' "$here/package.json")
got=$(node -p 'require(process.argv[1]).version' "$dest/node_modules/better-auth/package.json")
if [ "$want" != "$got" ]; then
  echo "better-auth $got installed, $want pinned" >&2
  exit 1
fi
cp "$here/package-lock.json" "$dest/.installed"
