"""The command line and a receiving node never import torch: ``--help`` answers at once and a
receiver accepts associations without seconds of start-up; a node restarted on its own database
does not load the migrations either. Each check runs in a fresh interpreter and looks at
``sys.modules``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from fixtures.peers import free_port, make_radiograph


def modules_after(script: str, *, cwd: Path | None = None) -> set[str]:
    """Run ``script`` in a fresh interpreter; the top-level packages it has imported at the end."""
    program = textwrap.dedent(script) + "\nimport sys\nprint(sorted({m.split('.')[0] for m in sys.modules}))\n"
    finished = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )
    assert finished.returncode == 0, finished.stderr
    return set(eval(finished.stdout.strip().splitlines()[-1]))


def test_importing_the_command_line_does_not_import_torch() -> None:
    assert "torch" not in modules_after("import osteonode.cli")


def test_osteonode_help_does_not_import_torch() -> None:
    imported = modules_after(
        """
        from osteonode.cli import app
        try:
            app(["--help"])
        except SystemExit as stop:
            assert stop.code == 0, stop.code
        """
    )
    assert "torch" not in imported


def test_a_receiving_node_stores_an_image_without_importing_torch(tmp_path: Path) -> None:
    film = make_radiograph(tmp_path / "spine.dcm")
    imported = modules_after(
        f"""
        import pydicom
        from pynetdicom import AE
        from osteonode.config import NodeConfig
        from osteonode.service import Node

        config = NodeConfig.model_validate({{
            "node": {{"port": {free_port()}}},
            "storage": {{"spool_dir": "spool", "min_free_mb": 1}},
            "database": {{"url": "sqlite:///node.db"}},
        }})
        node = Node(config, workers=False)
        node.start()
        try:
            ae = AE(ae_title="MODALITY")
            film = pydicom.dcmread({str(film)!r})
            ae.add_requested_context(film.SOPClassUID, film.file_meta.TransferSyntaxUID)
            association = ae.associate("127.0.0.1", config.node.port, ae_title="OSTEONODE")
            assert association.is_established
            assert association.send_c_store(film).Status == 0
            association.release()
        finally:
            node.stop()
        """,
        cwd=tmp_path,
    )
    assert "torch" not in imported


def test_a_node_restarted_on_a_current_database_does_not_load_the_migrations(tmp_path: Path) -> None:
    start_and_stop = f"""
        from osteonode.config import NodeConfig
        from osteonode.service import Node

        config = NodeConfig.model_validate({{
            "node": {{"port": {free_port()}}},
            "storage": {{"spool_dir": "spool", "min_free_mb": 1}},
            "database": {{"url": "sqlite:///node.db"}},
            "http": {{"enabled": False}},
        }})
        node = Node(config, workers=False)
        node.start()
        node.stop()
        """

    first = modules_after(start_and_stop, cwd=tmp_path)
    again = modules_after(start_and_stop, cwd=tmp_path)

    assert "alembic" in first
    assert "alembic" not in again
