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
    """docs/epmp.md named its protocol contract by a path into the steering repository's shared/ folder."""
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
    """Docstrings named the contract and the amqtt notes by paths into a shared/ folder beside the clone."""
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


def readme_blocks(heading: str) -> list[str]:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_readme_set_up_works_on_a_stock_debian_python_and_names_the_version() -> None:
    """`pip install -e .` failed on Debian 12's system Python (externally-managed-environment) and the
    README did not say Python >= 3.11. (.ci/quickstart runs the first command itself, with Debian's
    python3, and checks that the system Python is left as it was.)"""
    install, tests = (block.strip() for block in readme_blocks("## Set up"))  # exactly two commands
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert install == venv + "pip install -e . && mqtt-gateway serve"
    assert tests == venv + "pip install -e '.[test]' && python -m pytest -q"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    required = re.search(r'requires-python = ">=(\d+\.\d+)"', pyproject)
    assert required is not None
    set_up = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split("## Set up", 1)[1].split())
    assert f"Python {required[1]} or newer" in set_up and "python3-venv" in set_up
    assert readme_blocks("## Quickstart")[0].startswith(". .venv/bin/activate\n")  # the second shell
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'readme_block "## Set up" 2' in ci and 'bash -euo pipefail -c "$test_command"' in ci


def test_the_walkthrough_keeps_keys_out_of_the_source_tree() -> None:
    (walkthrough,) = readme_blocks("## Auto-provisioning in 4 commands")
    assert "./pki" not in walkthrough and " pki/" not in walkthrough
    assert "mqtt-gateway pki create-ca ~/acme-pki " in walkthrough
