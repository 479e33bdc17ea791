# shellcheck shell=bash
# Sourced by the benchmark scripts (load-bench.sh, ab-bench.sh, instructions.sh), from the
# repository's root: where the captures are, and the certificate and associations they all use.

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
