#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for SparseKV: system packages, the model, the texts.
# Idempotent: installed packages and downloaded files are kept.
#   SPARSEKV_HOME   where the model and texts go (default ~/.cache/sparsekv)
#   SPARSEKV_SKIP_APT=1   do not touch system packages (they must already be there)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libopenblas-dev libzmq3-dev pkg-config cfi-en)
# python3 with pip may come from elsewhere (pyenv); only ask Debian for it when absent.
python3 -m pip --version >/dev/null 2>&1 || APT_PACKAGES+=(python3 python3-pip)
# The HTTP API test (scripts/test_serve.sh) uses a venv and curl.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || APT_PACKAGES+=(python3-venv)
command -v curl >/dev/null 2>&1 || APT_PACKAGES+=(curl)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "${SPARSEKV_SKIP_APT:-0}" = 1 ]; then
    echo "error: missing Debian packages: ${missing[*]} (SPARSEKV_SKIP_APT=1 set)" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "[setup] installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -q >/dev/null || { echo "error: apt-get update failed (offline?)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "error: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi

python3 scripts/fetch_assets.py model texts >/dev/null
# The project's CSR dictionary (committed, made by `sparsekv dict train`, see README) goes
# where the CLI looks by default: $SPARSEKV_HOME/dicts/<model>.csr.gguf.
HOME_DIR="${SPARSEKV_HOME:-$HOME/.cache/sparsekv}"
mkdir -p "$HOME_DIR/dicts"
for d in dicts/*.csr.gguf; do
  [ -e "$d" ] || continue
  cmp -s "$d" "$HOME_DIR/dicts/$(basename "$d")" || cp "$d" "$HOME_DIR/dicts/"
done
# A venv with the real `openai` client and prometheus_client (from PyPI) for the HTTP API test.
if ! "$HOME_DIR/venv/bin/python" -c 'import openai, prometheus_client' >/dev/null 2>&1; then
  echo "[setup] making $HOME_DIR/venv (openai, prometheus_client)" >&2
  python3 -m venv "$HOME_DIR/venv"
  "$HOME_DIR/venv/bin/pip" install -q 'openai>=1.40' 'prometheus_client>=0.20' >/dev/null \
    || { echo "error: pip install openai prometheus_client failed (is PyPI reachable?)" >&2; exit 1; }
fi
echo "[setup] ready: model, texts, dictionary and the test venv in $HOME_DIR" >&2
