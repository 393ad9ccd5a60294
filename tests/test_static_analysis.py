"""Issue #8, finding 9: Bandit's medium- and high-severity findings in webapp/ fail the suite unless
``tests/bandit-allowlist.toml`` lists them with a reason (CI runs this with every test run)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = Path(__file__).with_name("bandit-allowlist.toml")


def _findings() -> list[dict]:
    result = subprocess.run(  # noqa: S603 (our own argv)
        [sys.executable, "-m", "bandit", "-r", "webapp", "--severity-level", "medium", "-f", "json", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    assert not report["errors"], report["errors"]
    return report["results"]


def _flagged_line(finding: dict) -> str:
    lines = (ROOT / finding["filename"]).read_text(encoding="utf-8").splitlines()
    # A multi-line statement is reported at its first line; its text may continue on the next ones.
    return "\n".join(lines[finding["line_number"] - 1 : finding["line_range"][-1] + 1])


def test_bandit_finds_nothing_unjustified():
    allowed = tomllib.loads(ALLOWLIST.read_text(encoding="utf-8"))["allow"]
    assert all(entry["why"].strip() for entry in allowed)
    findings = _findings()
    unexplained = [
        f"{finding['filename']}:{finding['line_number']} {finding['test_id']} {finding['issue_text']}"
        for finding in findings
        if not any(
            entry["file"] == finding["filename"]
            and entry["test"] == finding["test_id"]
            and entry["line"] in _flagged_line(finding)
            for entry in allowed
        )
    ]
    assert unexplained == []
    used = {
        (entry["file"], entry["test"], entry["line"])
        for entry in allowed
        for finding in findings
        if entry["file"] == finding["filename"]
        and entry["test"] == finding["test_id"]
        and entry["line"] in _flagged_line(finding)
    }
    stale = [entry for entry in allowed if (entry["file"], entry["test"], entry["line"]) not in used]
    assert stale == []  # an entry no finding needs any more is removed, not kept as a blanket pass
