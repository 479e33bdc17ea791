#!/usr/bin/env bash
# Writes the values table of charts/pod-identity-webhook/README.md from the `# --` comments of
# its values.yaml: every key with such a comment on the line(s) above it gets a row (its dotted
# path, its default, the comment). The table goes between the README's `<!-- values:start -->`
# and `<!-- values:end -->` lines; nothing else in the README changes.
#
#   hack/chart-readme.sh           rewrite the table
#   hack/chart-readme.sh --check   exit 1 (and say so) when the table is stale; change nothing
#   hack/chart-readme.sh --help
set -euo pipefail

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

check=0
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --check) check=1 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/charts/pod-identity-webhook"
values="$chart/values.yaml"
readme="$chart/README.md"

# The table. A key's default is its value when written on its own line; a map or list written
# over several lines is shown as "see values.yaml".
table() {
  awk '
    function flush_desc() { desc = "" }
    function cell(s) { gsub(/\|/, "\\|", s); return s }
    BEGIN {
      print "| Key | Default | Description |"
      print "|-----|---------|-------------|"
    }
    /^[[:space:]]*# -- / {
      line = $0; sub(/^[[:space:]]*# -- /, "", line)
      desc = line; next
    }
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*$/ { next }
    /^[[:space:]]*- / { desc = ""; next }
    {
      match($0, /^ */); indent = RLENGTH; level = int(indent / 2)
      line = substr($0, indent + 1)
      if (line !~ /^[A-Za-z0-9_.\/-]+:/) { desc = ""; next }
      key = line; sub(/:.*/, "", key)
      value = line; sub(/^[^:]*:[[:space:]]*/, "", value)
      path[level] = key
      for (i = level + 1; i < 32; i++) delete path[i]
      if (desc != "") {
        full = path[0]
        for (i = 1; i <= level; i++) full = full "." path[i]
        if (value == "") value = "see values.yaml"
        else value = "`" value "`"
        printf "| `%s` | %s | %s |\n", full, cell(value), cell(desc)
      }
      desc = ""
    }
  ' "$values"
}

if ! grep -q '^<!-- values:start -->$' "$readme" || ! grep -q '^<!-- values:end -->$' "$readme"; then
  echo "chart-readme: $readme has no <!-- values:start --> / <!-- values:end --> lines" >&2
  exit 1
fi

new="$(mktemp)"
trap 'rm -f "$new"' EXIT
tablefile="$(mktemp)"
trap 'rm -f "$new" "$tablefile"' EXIT
table >"$tablefile"
awk -v table="$tablefile" '
  /^<!-- values:start -->$/ { print; while ((getline l < table) > 0) print l; skip = 1; next }
  /^<!-- values:end -->$/ { skip = 0 }
  !skip { print }
' "$readme" >"$new"

if [[ $check == 1 ]]; then
  if ! cmp -s "$new" "$readme"; then
    echo "chart-readme: the values table of $readme is stale; run hack/chart-readme.sh" >&2
    diff -u "$readme" "$new" >&2 || true
    exit 1
  fi
  exit 0
fi
cat "$new" >"$readme"
