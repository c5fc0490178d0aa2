#!/usr/bin/env bash
# Installs the Debian packages hastore's tests (or benchmarks) drive, only
# those that are missing, so running it twice costs nothing.
set -euo pipefail
what=${1:-test}
pkgs=()
case "$what" in
  # roundcube-core with roundcube-sqlite3 (not the MariaDB default) and
  # php-cli: testing/roundcube runs Roundcube's IMAP engine with php-cli
  # (no web server is configured), against hastore and, for reference,
  # against Dovecot (dovecot-imapd).
  test)  pkgs=(isync fuse3 rsync git nginx-light curl postfix rspamd dovecot-core php-cli roundcube-core roundcube-sqlite3 dovecot-imapd) ;;
  bench) pkgs=(dovecot-imapd dovecot-lmtpd fio wrk nginx-light) ;;
  *) echo "usage: $0 test|bench" >&2; exit 2 ;;
esac
# pebble, Let's Encrypt's ACME test server (testing/acme), from the Go
# module proxy: no Debian package has it.
if [ "$what" = test ] && ! command -v pebble >/dev/null && [ ! -x "$(go env GOPATH)/bin/pebble" ]; then
  GOFLAGS=-mod=mod go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "testing/deps.sh: missing Debian packages ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix installed unconfigured: the outbound tests run private instances.
echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
# Roundcube installed without a database set up: the test uses its IMAP library only.
echo 'roundcube-core roundcube/dbconfig-install boolean false' | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
