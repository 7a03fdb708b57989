"""The import root ``composite_store`` cannot collide with a user's own ``models`` or ``repository``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

QUICK_START = textwrap.dedent("""
    from composite_store import CompositeStore

    with CompositeStore.from_urls(default="sqlite:///app.db") as storage:
        storage.init()
        memory = storage.get_store("memory")
        memory.save_thread(thread={"id": "t-1", "resource_id": "alice", "title": "Order 1042"})
        memory.save_messages(messages=[{"id": "m-1", "thread_id": "t-1", "resource_id": "alice",
                                        "role": "user", "content": "Where is my order?"}])
        page = memory.list_messages(thread_id="t-1")
        print(page.total, page.items[0]["content"]["content"])

    import models, repository   # the user's own modules are the ones these names import
    print(models.OWNER, repository.OWNER)
""")


def test_quick_start_runs_beside_a_users_models_and_repository(tmp_path):
    # A typical project folder: its own models package (and module) and a repository module.
    # Importing either as the library would fail loudly, so a collision cannot pass unnoticed.
    (tmp_path / "models").mkdir()
    for path in (tmp_path / "models" / "__init__.py", tmp_path / "models.py", tmp_path / "repository.py"):
        path.write_text("OWNER = 'user'\n")
    completed = subprocess.run([sys.executable, "-c", QUICK_START], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["1 Where is my order?", "user user"]


def test_nothing_named_models_or_repository_is_installed(tmp_path):
    probe = "import importlib.util as u; print(u.find_spec('models'), u.find_spec('repository'))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)
    assert completed.stdout.split() == ["None", "None"], completed.stderr
