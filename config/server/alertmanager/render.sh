#!/usr/bin/env bash
# Renders alertmanager.yml and its templates for deployment, from one file per value in
# a secrets directory (Alertmanager 0.25 has no *_file setting for Telegram's token,
# Discord's and the webhook's URLs, so those are written into the rendered file).
#
#   render.sh SECRETS_DIR OUT_DIR [SECRETS_DIR_AS_ALERTMANAGER_SEES_IT]
#
# SECRETS_DIR holds, one value per file (a trailing newline is ignored):
#   required: telegram_bot_token telegram_chat_id discord_webhook_url webhook_url
#             email_to email_from smtp_smarthost smtp_username
#             slack_api_url pagerduty_routing_key smtp_password  (read at run time)
#   optional: telegram_api_url pagerduty_url slack_channel smtp_require_tls grafana_url
# OUT_DIR receives alertmanager.yml (mode 0600) and templates/. The *_file settings point
# to the third argument (default: SECRETS_DIR itself), e.g. /etc/alertmanager/secrets
# when the directory is mounted there in a container.
set -euo pipefail

die() { printf 'render.sh: %s\n' "$*" >&2; exit 1; }

if [ $# -lt 2 ] || [ $# -gt 3 ]; then die "usage: render.sh SECRETS_DIR OUT_DIR [SECRETS_DIR_AS_ALERTMANAGER_SEES_IT]"; fi
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$1" ] || die "secrets directory $1 does not exist"
secrets=$(cd "$1" && pwd)
out=$2
seen_as=${3:-$secrets}
shipped_dir=/etc/alertmanager/secrets

# The value of secret NAME, without its trailing newlines; fails on a control character
# (a value must fit on one YAML line).
secret() {
  local value
  value=$(<"$secrets/$1")
  if [[ $value == *[[:cntrl:]]* ]]; then
    die "$secrets/$1: the value must be one line without control characters"
  fi
  printf '%s' "$value"
}

# A YAML double-quoted scalar.
quoted() {
  local value=${1//\\/\\\\}
  printf '"%s"' "${value//\"/\\\"}"
}

mkdir -p "$out/templates"
rendered=$(mktemp "$out/.alertmanager.yml.XXXXXX")
trap 'rm -f "$rendered"' EXIT
marker='^([[:space:]]*(-[[:space:]]+)?[A-Za-z_]+):[[:space:]].*#[[:space:]]+(REPLACE_ME|REPLACE_ME_NUMBER|DEFAULT)[[:space:]]+([a-z_]+)[[:space:]]*$'
file_setting="^[[:space:]]*(-[[:space:]]+)?[a-z_]+_file:[[:space:]]+$shipped_dir/([a-z_]+)[[:space:]]*$"
line_number=0
while IFS= read -r line || [ -n "$line" ]; do
  line_number=$((line_number + 1))
  if [[ $line =~ $marker ]]; then
    key=${BASH_REMATCH[1]} kind=${BASH_REMATCH[3]} name=${BASH_REMATCH[4]}
    if [ ! -f "$secrets/$name" ]; then
      [ "$kind" = DEFAULT ] || die "alertmanager.yml line $line_number needs $secrets/$name"
      printf '%s\n' "$line"
      continue
    fi
    value=$(secret "$name")
    if [ "$kind" = REPLACE_ME_NUMBER ]; then
      [[ $value =~ ^-?[0-9]+$ ]] || die "$secrets/$name: expected a number, got '$value'"
      printf '%s: %s\n' "$key" "$value"
    elif [ "$name" = smtp_require_tls ]; then
      [[ $value =~ ^(true|false)$ ]] || die "$secrets/$name: expected true or false"
      printf '%s: %s\n' "$key" "$value"
    else
      printf '%s: %s\n' "$key" "$(quoted "$value")"
    fi
  else
    if [[ $line =~ $file_setting ]]; then
      name=${BASH_REMATCH[2]}
      [ -f "$secrets/$name" ] || die "alertmanager.yml line $line_number reads $secrets/$name, which does not exist"
    fi
    printf '%s\n' "${line//$shipped_dir/$seen_as}"
  fi
done < "$here/alertmanager.yml" > "$rendered"
# Comments may mention the markers; values may not.
if grep -v '^[[:space:]]*#' "$rendered" | grep -q 'REPLACE_ME'; then
  die "placeholders left in the rendered file: $(grep -v '^[[:space:]]*#' "$rendered" | grep 'REPLACE_ME' | head -3)"
fi
chmod 600 "$rendered"
mv "$rendered" "$out/alertmanager.yml"
trap - EXIT

grafana_url=http://localhost:3000
[ -f "$secrets/grafana_url" ] && grafana_url=$(secret grafana_url)
for template in "$here"/templates/*.tmpl; do
  target="$out/templates/$(basename "$template")"
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line == '{{ define "nodewatch.grafana_url" }}'* ]]; then
      printf '{{ define "nodewatch.grafana_url" }}%s{{ end }}\n' "$grafana_url"
    else
      printf '%s\n' "$line"
    fi
  done < "$template" > "$target"
done

if command -v amtool >/dev/null 2>&1; then
  amtool check-config "$out/alertmanager.yml" >/dev/null || die "amtool check-config $out/alertmanager.yml failed"
fi
printf 'Rendered %s/alertmanager.yml\n' "$out"
