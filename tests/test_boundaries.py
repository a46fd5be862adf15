"""The shape the code keeps (issue 17): `web/` only parses, calls a use case, and renders
or serialises. It holds no SQL, opens no transaction and commits nothing: every change
runs in one Tx (coalition/uow.py) inside a use case of the domain package that owns it.
The package boundaries themselves are import-linter's contracts (pyproject.toml), which
`make test` runs; `test_import_contracts` runs them here too, so a plain pytest run
enforces them."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"

SQL = re.compile(r"(?is)\bselect\b.+\bfrom\b|\binsert\s+into\b|\bupdate\s+\w+\s+set\b"
                 r"|\bdelete\s+from\b|\bon\s+conflict\b|\bjsonb_build_object\b")
# Driver and ORM calls that run SQL, and the transaction's own verbs.
DATABASE_CALLS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "scalar",
                  "scalars", "scalar_one", "commit", "rollback", "transaction", "flush",
                  "copy_records_to_table", "acquire"}
# sqlalchemy's exceptions may be named (mapping errors to problems); nothing else of it.
ALLOWED_SQLALCHEMY = ("sqlalchemy.exc",)
ASYNCPG_TYPES = {"Connection", "Pool", "Record"}

# Modules still to convert (each leaves this list as its SQL moves into a use case).
PENDING: set[str] = {
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value,
                                                                     ast.Constant):
                found.add(id(body[0].value))
    return found


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings and SQL.search(node.value)):
            found.append(f"{where} SQL text {node.value[:40]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                node.func.attr in DATABASE_CALLS):
            found.append(f"{where} .{node.func.attr}()")
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module.split(".")[0] == "sqlalchemy"
                and not node.module.startswith(ALLOWED_SQLALCHEMY)):
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sqlalchemy") and not alias.name.startswith(
                        ALLOWED_SQLALCHEMY):
                    found.append(f"{where} imports {alias.name}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "asyncpg" and node.attr in ASYNCPG_TYPES):
            found.append(f"{where} asyncpg.{node.attr}")
    return found


def test_the_detector_finds_what_it_must() -> None:
    sample = ROOT / "tests" / "_boundary_sample.py"
    sample.write_text('"""SELECT a FROM docstring is fine."""\n'
                      "from sqlalchemy import text\n"
                      "async def f(conn, session):\n"
                      "    await conn.fetchrow('SELECT 1 FROM t')\n"
                      "    await session.commit()\n"
                      "    async with conn.transaction():\n"
                      "        pass\n")
    try:
        found = offences(sample)
    finally:
        sample.unlink()
    assert len(found) == 5, found


def test_web_holds_no_sql_and_no_transaction() -> None:
    offending: dict[str, list[str]] = {}
    for path in sorted(WEB.rglob("*.py")):
        name = str(path.relative_to(ROOT))
        found = offences(path)
        if found and name not in PENDING:
            offending[name] = found
    assert not offending, "\n".join(line for lines in offending.values() for line in lines)


def test_pending_lists_only_what_still_needs_converting() -> None:
    clean = sorted(name for name in PENDING if not offences(ROOT / name))
    assert not clean, f"remove from PENDING, they are converted: {clean}"


def test_import_contracts() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
