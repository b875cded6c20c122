#!/usr/bin/env bash
# Puts the SMS Spam Collection at DEST unless it is already there, from its
# canonical public source (UCI), and refuses any file whose SHA-256 is not
# the pinned one. Usage: fetch-dataset.sh DEST SHA256
set -euo pipefail

dest=${1:?usage: fetch-dataset.sh DEST SHA256}
sha=${2:?usage: fetch-dataset.sh DEST SHA256}
# SMS_DATASET_URL lets tests point at a local copy (file://).
url=${SMS_DATASET_URL:-https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip}

matches() { echo "$sha  $1" | sha256sum --check --status; }

if [[ -f $dest ]]; then
  if matches "$dest"; then
    exit 0
  fi
  echo "error: $dest exists but its SHA-256 is $(sha256sum "$dest" | cut -d' ' -f1), expected $sha" >&2
  exit 1
fi

echo "fetching the SMS Spam Collection from $url"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl --fail --silent --show-error --location --retry 3 --output "$tmp/collection.zip" "$url"
# Python's zipfile rather than unzip, which is not on every machine.
python3 - "$tmp/collection.zip" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("SMSSpamCollection", sys.argv[2])
PY
if ! matches "$tmp/SMSSpamCollection"; then
  echo "error: the downloaded SMSSpamCollection has SHA-256 $(sha256sum "$tmp/SMSSpamCollection" | cut -d' ' -f1), expected $sha" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
mv "$tmp/SMSSpamCollection" "$dest"
echo "wrote $dest"
