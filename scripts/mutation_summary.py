"""Per-module and per-package mutation scores from the last `mutmut run` (see docs/testing.md).

    mutmut results --all true | python scripts/mutation_summary.py [--markdown] [EARLIER_RESULTS ...]

Reads mutmut's own result listing (one `name: status` a line) rather than its cache files, whose layout
is private to mutmut. A mutant counts as killed when a test failed on it or it timed out; "no tests"
(no selected test reaches the mutated function) counts against the score, as a survivor does.

EARLIER_RESULTS are saved listings of earlier runs: a mutant stdin lists as "not checked" (a run over
part of the modules) keeps its earlier status, so runs over a few modules at a time add up.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

# mutmut 3 names a mutant <module>.x_<function>__mutmut_<n> or <module>.xǁ<Class>ǁ<method>__mutmut_<n>.
NAME = re.compile(r"^\s*(?P<module>[\w.]+?)\.x[_ǁ].*__mutmut_\d+:\s*(?P<status>.+?)\s*$")
COLUMNS = ("generated", "checked", "killed", "timeout", "survived", "no tests", "other")
DETECTED = ("killed", "timeout", "caught by type check")


def parse(lines: list[str], where: str) -> dict[str, tuple[str, str]]:
    """Mutant name -> (module, status); a line that is not a mutant result is an error naming it."""
    out: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = NAME.match(line)
        if match is None:
            raise ValueError(f"{where} line {number} is not '<mutant>: <status>': {line!r}")
        out[line.split(":", 1)[0].strip()] = (match["module"], match["status"])
    return out


def merge(
    latest: dict[str, tuple[str, str]], earlier: list[dict[str, tuple[str, str]]]
) -> dict[str, Counter[str]]:
    """Count statuses per module, a mutant not checked in the latest run keeping its last status."""
    merged: dict[str, tuple[str, str]] = {}
    for results in [*earlier, latest]:
        for name, (module, status) in results.items():
            if status != "not checked" or name not in merged:
                merged[name] = (module, status)
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for module, status in merged.values():
        by_module[module][status] += 1
    return by_module


def row(counts: Counter[str]) -> tuple[int, int, int, int, int, int, int, float]:
    """generated, checked, killed, timeout, survived, no tests, other; share killed over those checked."""
    generated = sum(counts.values())
    checked = generated - counts["not checked"]
    killed, timeout = counts["killed"] + counts["caught by type check"], counts["timeout"]
    survived, no_tests = counts["survived"], counts["no tests"]
    other = checked - killed - timeout - survived - no_tests
    share = (killed + timeout) / checked if checked else float("nan")
    return generated, checked, killed, timeout, survived, no_tests, other, share


def main(argv: list[str]) -> int:
    files = [a for a in argv if a and not a.startswith("--")]
    try:
        earlier = [parse(Path(f).read_text().splitlines(), f) for f in files]
        by_module = merge(parse(sys.stdin.read().splitlines(), "stdin"), earlier)
    except (OSError, ValueError) as err:
        raise SystemExit(f"mutation_summary: {err}") from None
    if not by_module:
        raise SystemExit(
            "no mutant results on stdin: run `mutmut run` first, then pipe `mutmut results --all true`"
        )
    packages: dict[str, Counter[str]] = defaultdict(Counter)
    total: Counter[str] = Counter()
    for module, counts in by_module.items():
        packages[module.rsplit(".", 1)[0]] += counts
        total += counts
    groups = [*sorted(by_module.items()), *sorted(packages.items()), ("overall", total)]
    if "--markdown" in argv:
        print("| module | " + " | ".join(COLUMNS) + " | share killed |")
        print("|---" * (len(COLUMNS) + 2) + "|")
        for name, counts in groups:
            *numbers, share = row(counts)
            if numbers[1]:
                print(f"| `{name}` | " + " | ".join(str(n) for n in numbers) + f" | {share:.1%} |")
        return 0
    table = Table(title="mutation score (killed + timeout over mutants checked)")
    for column in ("module", *COLUMNS, "share killed"):
        table.add_column(column, justify="left" if column == "module" else "right")
    for name, counts in groups:
        *numbers, share = row(counts)
        if numbers[1]:
            table.add_row(name, *(str(n) for n in numbers), f"{share:.1%}")
    Console(width=130).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
