#!/usr/bin/env bash
# Build the virtualenv of the local OpenAI-compatible embeddings server (Infinity) that the remote
# encoder's tests start: .embrec/remote-server-venv (git-ignored). Idempotent: does nothing when
# the virtualenv exists and was built from the current requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.embrec/remote-server-venv
REQUIREMENTS=tests/remote_server/requirements.txt
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"

if [ -x "$VENV/bin/infinity_emb" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  exit 0
fi

echo "Building the embeddings server's virtualenv in $VENV"
rm -rf "$VENV"
mkdir -p .embrec
"${PYTHON:-python3.11}" -m venv "$VENV"
# Every package is pinned in the file: --no-deps keeps pip from resolving anything else.
"$VENV/bin/pip" install --quiet --no-deps -r "$REQUIREMENTS"
"$VENV/bin/python" -c "import infinity_emb, torch, numpy; assert numpy.__version__ < '2'"
echo "$WANT" > "$STAMP"
