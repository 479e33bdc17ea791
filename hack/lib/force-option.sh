# Sourced by the hack/ build scripts: prints the calling script's header comment as its usage and
# reads its one option, --force, into $force (1 to rebuild even when the binaries are there).
# shellcheck shell=bash disable=SC2034 # $force is read by the script that sources this file

usage() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
}

force=0
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --force) force=1 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
