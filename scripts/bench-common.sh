# shellcheck shell=bash
# Sourced by the benchmark scripts (load-bench.sh, ab-bench.sh, instructions.sh, memory-flood.sh,
# agent-idle-rss.sh), from the repository's root: where the captures are, the certificate and
# associations they use, and their clean-up on exit.

# Prints the captures directory: $POD_IDENTITY_FIXTURES, else the repository's own copy.
bench_fixtures() {
  local d="${POD_IDENTITY_FIXTURES:-tests/fixtures/apiserver-v1.24}"
  if [ -d "$d" ]; then
    echo "$d"
    return 0
  fi
  echo "fixtures not found at $d; set POD_IDENTITY_FIXTURES to a directory of captures" >&2
  return 1
}

# bench_workdir WEBHOOK_BINARY DIR: DIR/certs (a CA and a certificate for 127.0.0.1 and
# localhost, made by the webhook's own `certs` command) and DIR/associations.yaml (5,000 entries).
bench_workdir() {
  "$1" certs --out "$2/certs" --san 127.0.0.1 --san localhost >/dev/null 2>&1
  scripts/bench-associations.sh >"$2/associations.yaml"
}

# bench_cleanup_on_exit DIR: when the script exits, however it exits, stop every process it
# started in the background and remove DIR.
bench_cleanup_on_exit() {
  BENCH_WORK="$1"
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local pids
  read -ra pids <<<"$(jobs -p | tr '\n' ' ')"
  if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$BENCH_WORK"
}
