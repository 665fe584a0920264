"""The node configuration: embedded defaults, a site's file, environment overrides, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from osteonode.cli import app
from osteonode.config import ConfigError, check_config, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_node_runs_on_embedded_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.node.ae_title == "OSTEONODE"
    assert config.node.port == 11112
    assert config.database.url.startswith("sqlite:///var/")
    assert [rule.pipelines for rule in config.routing.rules if rule.pipelines] == [
        ["lumbar_lateral"], ["lumbar_lateral"],
        ["lumbar", "lumbar_ap"], ["lumbar", "lumbar_ap"], ["lumbar"],
        ["chest"], ["chest"], ["hip"], ["hip"],
    ]


def test_site_file_changes_only_the_keys_it_names(tmp_path):
    path = write(tmp_path, '[node]\nae_title = "BONE_AI"\n[workers]\ncount = 4\n')
    config = load_config(path, environ={})
    assert (config.node.ae_title, config.node.port, config.workers.count) == ("BONE_AI", 11112, 4)


def test_environment_overrides_single_keys_over_the_file(tmp_path):
    path = write(tmp_path, "[node]\nport = 104\n")
    config = load_config(
        path,
        environ={
            "OSTEONODE_NODE__PORT": "11113",
            "OSTEONODE_DATABASE__URL": "postgresql://db/osteonode",
            "OSTEONODE_ASSOCIATION__REQUIRE_CALLED_AE": "false",
        },
    )
    assert config.node.port == 11113
    assert config.database.url == "postgresql://db/osteonode"
    assert config.association.require_called_ae is False


def test_config_path_can_come_from_the_environment(tmp_path):
    path = write(tmp_path, '[node]\nae_title = "FROM_ENV"\n')
    assert load_config(environ={"OSTEONODE_CONFIG": str(path)}).node.ae_title == "FROM_ENV"


def test_every_bad_key_is_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        """
[node]
port = 70000
ae_title = "A_TITLE_FAR_TOO_LONG_FOR_DICOM"
colour = "blue"
[workers]
count = "many"
[pipelines.hip]
destinations = ["pacs"]
[[routing.rules]]
name = "neither"
[[routing.rules]]
name = "to-research"
pipeline = "lumbar"
destinations = ["research"]
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    problems = {problem.key: problem.reason for problem in caught.value.problems}
    assert "less than or equal to 65535" in problems["node.port"]
    assert "at most 16 characters" in problems["node.ae_title"]
    assert problems["node.colour"] == "unknown key"
    assert "valid integer" in problems["workers.count"]
    assert "'pacs' is not defined" in problems["pipelines.hip.destinations"]
    assert "'research' (rule 'to-research') is not defined" in problems["routing.rules.1.destinations"]
    assert "exactly one of 'pipelines' or 'skip'" in problems["routing.rules.0"]
    assert str(path) in str(caught.value)


def test_unreadable_and_malformed_files_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\nport = 1"), environ={})


def test_malformed_environment_override_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="OSTEONODE_SECTION__KEY"):
        load_config(environ={"OSTEONODE_PORT": "1"})


def test_check_reports_an_unwritable_spool_directory(tmp_path):
    # /proc refuses new directories even to root, so this holds on CI machines that run as root.
    problems = check_config(write(tmp_path, '[storage]\nspool_dir = "/proc/osteonode-spool"\n'), environ={})
    assert len(problems) == 1
    assert problems[0].key == "storage.spool_dir"
    assert "not writable" in problems[0].reason


def test_config_check_command_lists_problems_and_fails(tmp_path):
    path = write(tmp_path, "[node]\nport = 0\nbogus = 1\n")
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2
    assert "node.port" in result.output and "node.bogus: unknown key" in result.output


def test_config_check_command_accepts_a_good_file(tmp_path):
    spool = tmp_path / "spool"
    path = write(tmp_path, f'[storage]\nspool_dir = "{spool}"\n')
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.output


def test_shipped_node_config_file_is_valid(monkeypatch, tmp_path):
    shipped = Path(__file__).resolve().parents[2] / "node_config" / "node.toml"
    config = load_config(shipped, environ={})
    assert config.node.ae_title


def test_config_check_command_also_checks_the_reference_file(tmp_path):
    spool = tmp_path / "spool"
    path = write(tmp_path, f'[storage]\nspool_dir = "{spool}"\n')
    reference = tmp_path / "reference.toml"
    reference.write_text("[lumbar]\nsite_manufacturer = 'hologic'\nbogus = 1\n")
    result = CliRunner().invoke(
        app, ["config", "check", "--config", str(path), "--reference", str(reference)]
    )
    assert result.exit_code == 2
    assert "reference: lumbar.bogus: unknown key" in result.output
