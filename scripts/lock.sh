#!/usr/bin/env bash
# Regenerate requirements.lock: every dependency of bnr and its `dev`, `service`, `attack`, `lm-eval` and `ray` extras, pinned with sha256
# hashes, for Python 3.11 on this platform (linux x86_64). One command: scripts/lock.sh (then commit requirements.lock).
#
# torch is the CPU build torch==2.13.0+cpu. PyPI's torch 2.13.0 for linux is the CUDA build (it pulls ~3 GB of
# nvidia-* wheels), so the lock takes torch from a find-links folder holding the CPU wheel: $FIND_LINKS, else
# pip's configured global.find-links (here /opt/wheels, from /etc/xdg/pip and ~/.config/pip), and refuses to
# write a lock without "+cpu" torch. Everything else resolves from PyPI. pyproject.toml keeps version ranges for
# library users; scripts/setup.sh installs this lock.
set -euo pipefail
cd "$(dirname "$0")/.."
FIND_LINKS=${FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}
if [ -z "$FIND_LINKS" ] || ! ls "$FIND_LINKS"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  echo "lock.sh: no torch-2.13.0+cpu wheel in FIND_LINKS='$FIND_LINKS'; set FIND_LINKS=<folder with it>" >&2
  exit 2
fi
UV=${UV:-$(command -v uv || true)}
if [ -z "$UV" ]; then  # uv in a throwaway tool environment, never in the project's .venv
  TOOLS=${TMPDIR:-/tmp}/bnr-lock-tools
  [ -x "$TOOLS/bin/uv" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q "uv>=0.8,<1"; }
  UV=$TOOLS/bin/uv
fi
# start from the current lock, so uv keeps every pin it can and only what changed moves
[ -f requirements.lock ] && cp requirements.lock requirements.lock.tmp
"$UV" pip compile pyproject.toml --extra dev --extra service --extra attack --extra lm-eval --extra ray --python-version 3.11 --generate-hashes \
  --find-links "$FIND_LINKS" --no-emit-find-links --custom-compile-command "scripts/lock.sh" \
  --quiet -o requirements.lock.tmp
grep -q '^torch==2.13.0+cpu ' requirements.lock.tmp || { echo "lock.sh: torch is not the CPU build" >&2; exit 1; }
mv requirements.lock.tmp requirements.lock
echo "wrote requirements.lock ($(grep -c '^[a-z0-9]' requirements.lock) packages)"
