#!/usr/bin/env bash
# Policy as code in any CI: run from the repository that holds your broker
# policies. Fails the build if the policies are invalid or unformatted, if a
# test case fails, or if the write-only rule can be broken for any entity
# store (`prove`, which needs the cvc5 solver: `apt-get install cvc5`, or
# `CVC5=/path/to/cvc5`).
#
#   POLICIES=policies TESTS=policies/tests deploy/ci/policy-check.sh
#
# SECRET_BROKER (default: `secret-broker` on PATH) is the broker binary;
# JUNIT, if set, is where the test results go as JUnit XML. Validation
# warnings fail the build (`--deny-warnings`, as `cedar run-tests` does);
# DENY_WARNINGS=0 only prints them.
set -euo pipefail

SECRET_BROKER="${SECRET_BROKER:-secret-broker}"
POLICIES="${POLICIES:-policies}"
TESTS="${TESTS:-$POLICIES/tests}"

junit=()
[ -n "${JUNIT:-}" ] && junit=(--junit "$JUNIT")
deny=(--deny-warnings)
[ "${DENY_WARNINGS:-1}" = 0 ] && deny=()

step() { echo "::: secret-broker policy $*"; "$SECRET_BROKER" policy "$@"; }

step validate --policies "$POLICIES" "${deny[@]}"
step fmt --check --policies "$POLICIES"
step test --policies "$POLICIES" "$TESTS" "${junit[@]}" "${deny[@]}"
step prove --policies "$POLICIES"
