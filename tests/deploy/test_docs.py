"""The documents a site reads stay true to the code: the conformance statement lists what the SCP
accepts, links resolve, the README renders, the licence is the one pyproject declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pynetdicom import AllStoragePresentationContexts

from osteonode.dicom.scp import ACCEPTED_TRANSFER_SYNTAXES

REPOSITORY = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]


def test_conformance_statement_lists_every_sop_class_and_transfer_syntax_the_node_accepts() -> None:
    statement = (REPOSITORY / "docs" / "conformance-statement.md").read_text("utf-8")
    listed = set(re.findall(r"`([0-9.]+)`", statement))

    missing_classes = {
        context.abstract_syntax for context in AllStoragePresentationContexts
    } - listed
    missing_syntaxes = {str(syntax) for syntax in ACCEPTED_TRANSFER_SYNTAXES} - listed

    assert not missing_classes and not missing_syntaxes
    assert f"Storage SOP classes accepted ({len(AllStoragePresentationContexts)})" in statement


def test_every_relative_link_in_the_documents_resolves() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)\)", document.read_text("utf-8")):
            if "://" not in target and not (document.parent / target).exists():
                broken.append(f"{document.name}: {target}")
    assert not broken


def test_code_fences_are_closed_so_the_documents_render() -> None:
    for document in DOCUMENTS:
        fences = [
            line.strip()
            for line in document.read_text("utf-8").splitlines()
            if line.lstrip().startswith("```")
        ]
        assert len(fences) % 2 == 0, document.name
        # A fence line holds the fence and at most a language name: text after a closing fence
        # ("``` The node stops ...") leaves the block open and swallows the rest of the page.
        assert all(re.fullmatch(r"```[\w-]*", fence) for fence in fences), (document.name, fences)


def test_license_is_the_apache_license_pyproject_declares() -> None:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text("utf-8"))["project"]
    licence = (REPOSITORY / "LICENSE").read_text("utf-8")

    assert project["license"] == {"text": "Apache-2.0"}
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
