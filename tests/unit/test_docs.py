"""The README and docs/ name only what exists (issue 29): every link and anchor, every repository path (and the
function or class after `::`), every `changeflow` command and subcommand. Prose that names a renamed file or a
removed command fails here, not in a newcomer's shell."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# A repository path: a top-level folder or file of the checkout, then the rest; `::name` or `:name` after a file
# names something in it.
REPO_PATH = re.compile(r"^(?P<path>[A-Za-z_.][\w.-]*(?:/[\w.-]+)*)(?:::?(?P<symbol>[A-Za-z_][\w.]*))?$")
COMMAND = re.compile(r"(?:^|[\s(`|;&])changeflow((?:\s+[a-z][\w-]*){1,2})")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def code_spans(text: str) -> list[str]:
    """Inline code and every line of fenced blocks."""
    spans = [line for block in FENCE.findall(text) for line in block.splitlines()]
    return spans + INLINE_CODE.findall(FENCE.sub("", text))


def repository_paths(text: str) -> list[tuple[str, str | None]]:
    top_level = {entry.name for entry in ROOT.iterdir()}
    found = []
    for span in INLINE_CODE.findall(FENCE.sub("", text)):
        match = REPO_PATH.match(span.strip())
        if match and match["path"].split("/")[0] in top_level and ("/" in match["path"] or "." in match["path"]):
            found.append((match["path"], match["symbol"]))
    return found


def command_tree() -> dict[str, set[str]]:
    """Each `changeflow` command and, for a group, its subcommands."""
    from cli import app

    root = typer.main.get_command(app)
    context = root.context_class(root)  # (Typer's own click: a group is what lists commands)
    tree = {}
    for name in root.list_commands(context):
        command = root.get_command(context, name)
        tree[name] = set(command.list_commands(context)) if hasattr(command, "list_commands") else set()
    return tree


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_anchor_resolves(page: Path):
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(linked):
            broken.append(f"{target}: no heading makes #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_and_symbol_exists(page: Path):
    missing = []
    for path, symbol in repository_paths(page.read_text()):
        target = ROOT / path.rstrip("/")
        if not target.exists():
            missing.append(path)
        elif symbol and target.is_file():
            name = symbol.split(".")[-1]
            if not re.search(rf"\b(def|class)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*[:=]",
                             target.read_text(), re.M):
                missing.append(f"{path}::{symbol}")
    assert not missing, f"{page.name} names what the tree does not hold: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_changeflow_command_exists(page: Path):
    tree = command_tree()
    unknown = []
    for span in code_spans(page.read_text()):
        for words in COMMAND.findall(span):
            command, *rest = words.split()
            if command not in tree:
                unknown.append(f"changeflow {command}")
            elif tree[command] and rest and rest[0] not in tree[command]:
                unknown.append(f"changeflow {command} {rest[0]}")
    assert not unknown, f"{page.name} names commands `changeflow --help` does not list: {sorted(set(unknown))}"


def test_the_checks_see_what_they_check():
    """The patterns find what the pages hold (a pattern that matched nothing would pass every page)."""
    readme = (ROOT / "README.md").read_text()
    assert ("tests/e2e/test_browser.py", None) in repository_paths(readme)
    assert any("confirm-filing" in words for span in code_spans(readme) for words in COMMAND.findall(span))
    assert "using-it-in-the-prefect-ui" in anchors(ROOT / "README.md")
    assert {"verify", "export"} <= command_tree()["audit"]
    assert slug("The `changeflow` command") == "the-changeflow-command"


def test_make_up_takes_its_ports():
    """Issue 30: `make up` had no port variable; the README shows `make up PORT=... ENDPOINT_PORT=...`."""
    import subprocess

    planned = subprocess.run(["make", "-n", "up", "PORT=4300", "ENDPOINT_PORT=4380"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    assert planned.returncode == 0, planned.stderr
    assert "changeflow up --port 4300 --endpoint-port 4380" in planned.stdout, planned.stdout
    assert "make up PORT=4300 ENDPOINT_PORT=4380" in (ROOT / "README.md").read_text()
