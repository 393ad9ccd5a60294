"""Issue #8, finding 9: requirements.lock pins every package, direct and transitive, to one version
with its hashes (``pip install --require-hashes -r requirements.lock``), and stays in step with
requirements.txt: every requirement there is in the lock at a version it allows."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes), from the lock's ``name==version \\`` blocks."""
    found = {}
    for block in re.split(r"\n(?=\S)", (ROOT / "requirements.lock").read_text(encoding="utf-8")):
        head = re.match(r"^([A-Za-z0-9_.\-\[\],]+)==(\S+)", block)
        if head:
            name = canonicalize_name(head.group(1).split("[")[0])
            found[name] = (head.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return found


def test_every_locked_package_is_pinned_with_hashes():
    locked = _locked()
    assert len(locked) > 100
    assert [name for name, (_version, hashes) in locked.items() if not hashes] == []


def test_the_lock_follows_requirements_txt():
    locked = _locked()
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    problems = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement.name} is not in requirements.lock")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            problems.append(f"{requirement} but the lock has {locked[name][0]}")
    assert problems == []  # regenerate: see the README, "Supply chain"
