"""``config check`` finds what start-up would hit; ``status``, ``route`` and ``analyze`` say when they
cannot do their job, in their exit code, and create nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.peers import free_port, make_radiograph, toml_document
from typer.testing import CliRunner

from osteonode.cli import app
from osteonode.config import SHIPPED_PIPELINES


def node_toml(tmp_path: Path, **sections: dict) -> Path:
    """A configuration whose state lives under ``tmp_path``, with ``sections`` merged over it."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    settings: dict[str, dict] = {
        "storage": {"spool_dir": tmp_path / "spool"},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "models": {"dir": models},
        "destinations.pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242},
        **{f"pipelines.{name}": {"destinations": ["pacs"]} for name in SHIPPED_PIPELINES},
    }
    for section, keys in sections.items():
        settings.setdefault(section.replace("__", "."), {}).update(keys)
    path = tmp_path / "node.toml"
    path.write_text(toml_document(settings), encoding="utf-8")
    return path


def run(*arguments: str | Path):
    return CliRunner().invoke(app, [str(argument) for argument in arguments])


def check(config: Path):
    return run("config", "check", "--config", config)


def test_a_usable_configuration_passes_with_warnings_for_models_not_installed(tmp_path):
    result = check(node_toml(tmp_path))

    assert result.exit_code == 0, result.output
    assert f"configuration OK ({len(SHIPPED_PIPELINES)} warnings)" in result.output
    assert (
        "pipelines.lumbar.model" in result.output and "wait until it is installed" in result.output
    )


def test_a_missing_models_folder_is_an_error(tmp_path):
    result = check(node_toml(tmp_path, models={"dir": tmp_path / "no-models"}))

    assert result.exit_code == 2
    assert "error: models.dir: folder" in result.output and "no pipeline can run" in result.output


def test_an_unreachable_database_is_an_error(tmp_path):
    unreachable = f"postgresql://osteonode@127.0.0.1:{free_port()}/osteonode"
    result = check(node_toml(tmp_path, database={"url": unreachable}))

    assert result.exit_code == 2
    assert "error: database.url: cannot reach database" in result.output


def test_enabled_pipelines_without_destinations_are_warned_of(tmp_path):
    config = node_toml(
        tmp_path, pipelines__chest={"destinations": []}, pipelines__hip={"enabled": False}
    )
    result = check(config)

    assert result.exit_code == 0, result.output
    assert "warning: pipelines.chest.destinations: empty: results of chest are stored but sent" in (
        result.output.replace("\n", " ")
    )
    assert "pipelines.hip.destinations" not in result.output


def test_unusable_tls_files_and_unresolvable_allow_list_hosts_are_errors(tmp_path):
    config = node_toml(
        tmp_path,
        tls={
            "enabled": True,
            "certificate": tmp_path / "node.crt",
            "private_key": tmp_path / "node.key",
        },
        destinations__pacs={"tls": {"enabled": True, "ca_certificates": tmp_path / "ca.crt"}},
        association={"allowed_callers": [{"ae_title": "PACS", "host": "no-such-host.invalid"}]},
    )
    result = check(config)
    output = result.output.replace("\n", " ")

    assert result.exit_code == 2
    assert "error: tls.certificate:" in output and "node.crt does not exist" in output
    assert "error: destinations.pacs.tls.ca_certificates:" in output
    assert "error: association.allowed_callers: host 'no-such-host.invalid'" in output


def test_a_sqlite_database_in_a_missing_folder_is_warned_of_and_nothing_is_created(tmp_path):
    folder = tmp_path / "nowhere"
    config = node_toml(
        tmp_path,
        database={"url": f"sqlite:///{folder / 'node.db'}"},
        storage={"spool_dir": tmp_path / "not-yet" / "spool"},
    )
    checked = check(config)
    status = run("status", "--config", config)

    assert checked.exit_code == 0, checked.output
    assert f"warning: database.url: folder {folder} does not exist" in checked.output.replace(
        "\n", ""
    )
    assert status.exit_code == 0
    assert not folder.exists() and not (tmp_path / "not-yet").exists()


def test_status_on_a_fresh_install_says_nothing_happened_yet_also_as_json(tmp_path):
    config = node_toml(tmp_path)

    shown = run("status", "--config", config)
    as_json = run("status", "--json", "--config", config)

    assert shown.exit_code == 0 and "the node creates it when it first starts" in shown.output
    assert as_json.exit_code == 0
    document = as_json.stdout[as_json.stdout.index("{") :]
    assert json.loads(document) == {"jobs": {}, "deliveries": {}, "workers": [], "events": []}
    assert not (tmp_path / "node.db").exists()


def test_status_with_an_unreachable_database_fails_with_a_json_reason(tmp_path):
    unreachable = f"postgresql://osteonode@127.0.0.1:{free_port()}/osteonode"
    result = CliRunner().invoke(
        app,
        ["status", "--json", "--config", str(node_toml(tmp_path, database={"url": unreachable}))],
    )

    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"].startswith("cannot reach database")


@pytest.fixture
def not_dicom(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file")
    return path


def test_route_exits_1_when_a_file_is_unreadable_after_listing_every_file(tmp_path, not_dicom):
    film = make_radiograph(tmp_path / "film.dcm")
    result = run("route", film, not_dicom, "--json", "--config", node_toml(tmp_path))

    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [row["skip"] for row in rows] == [None, "unreadable"]
    assert run("route", film, "--config", node_toml(tmp_path)).exit_code == 0


def test_analyze_exits_1_on_an_unreadable_file(tmp_path, not_dicom):
    result = run("analyze", not_dicom, "--config", node_toml(tmp_path))

    assert result.exit_code == 1
    assert "skipped: unreadable" in result.output
