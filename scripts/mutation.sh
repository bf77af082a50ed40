#!/usr/bin/env bash
# Mutation testing of the engine's decision rules (control/, economics/, scoring/) with mutmut 3.
# Configuration: [tool.mutmut] in pyproject.toml (which files are mutated, which tests run).
#
#   scripts/mutation.sh                                # every mutant (about 8,000; 30-60 min on 2 cores)
#   scripts/mutation.sh "seamguard.control.budgets*"   # only the mutants whose names match
#   MUTMUT_CHILDREN=2 scripts/mutation.sh              # more worker processes (default 1)
#
# Results are cached in mutants/ (git-ignored): a re-run only tests mutants whose function changed.
# Delete mutants/ for a clean run. The last step prints the score per module, package and overall;
# `mutmut results` lists survivors and `mutmut show <name>` prints one mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
"$BIN/python" -c 'import mutmut' 2>/dev/null || {
  echo "mutmut is missing from $BIN: pip install -e '.[dev]'" >&2
  exit 1
}
nice -n "${MUTMUT_NICE:-15}" "$BIN/mutmut" run --max-children "${MUTMUT_CHILDREN:-1}" "$@" | tail -n 3
"$BIN/mutmut" results --all true | "$BIN/python" scripts/mutation_summary.py ${MUTMUT_SUMMARY_ARGS:+"$MUTMUT_SUMMARY_ARGS"}
