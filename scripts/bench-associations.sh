#!/usr/bin/env bash
# Writes the benchmarks' associations file to stdout: 5,000 associations, including the
# ServiceAccounts of the captured pods (so every captured pod is mutated). Used by the
# benchmark scripts through bench-common.sh.
set -euo pipefail
echo "associations:"
for sa in carts default s3-reader db migrator reporter; do
  printf '  - {namespace: team-a, serviceAccount: %s, roleArn: "arn:aws:iam::111122223333:role/%s"}\n' "$sa" "$sa"
done
for i in $(seq 6 4999); do
  printf '  - {namespace: ns-%d, serviceAccount: sa-%d, roleArn: "arn:aws:iam::111122223333:role/r-%d"}\n' $((i % 100)) "$i" "$i"
done
