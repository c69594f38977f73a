"""The documentation stays inside the repository and says what a new user runs into (issue 17)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
RELATIVE_FILE = re.compile(r"(?<![\w./-])((?:\.\./)+[\w./-]+)")


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in listed.stdout.splitlines()]


def inside(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def test_every_link_in_the_docs_leads_to_a_file_of_the_repository() -> None:
    """docs/epmp.md named its protocol contract as `../shared/spec/kp1-epmp.md`, outside the repository."""
    bad = []
    for doc in tracked("*.md"):
        text = doc.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page
            path = doc.parent / target.split("#", 1)[0]
            if not inside(path) or not path.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target}")
        for target in RELATIVE_FILE.findall(text):  # paths written as code, not as links
            if not any(inside(base / target) and (base / target).exists() for base in (doc.parent, ROOT)):
                bad.append(f"{doc.relative_to(ROOT)}: {target}")
    assert bad == []


def test_no_source_file_points_outside_the_repository() -> None:
    """Docstrings named `../shared/spec/kp1-epmp.md` and `../shared/notes/amqtt-0.12.md`."""
    bad = []
    for source in tracked("*.py", "*.toml", "*.html", ".ci/*", "deploy/*"):
        text = source.read_text(encoding="utf-8")
        for target in RELATIVE_FILE.findall(text):
            if target.endswith((".md", ".py", ".toml", ".json")) and not inside(ROOT / target):
                bad.append(f"{source.relative_to(ROOT)}: {target}")
    assert bad == []


def test_the_protocol_contract_is_in_docs() -> None:
    contract = (ROOT / "docs" / "kp1-epmp.md").read_text(encoding="utf-8")
    assert contract.startswith("# Device protocol contract: 1/KP topics and 10/EPMP metadata")
    assert "[kp1-epmp.md](kp1-epmp.md)" in (ROOT / "docs" / "epmp.md").read_text(encoding="utf-8")
