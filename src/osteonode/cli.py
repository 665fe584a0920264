"""The ``osteonode`` command line: a thin shell over the library.

Each command parses its arguments, calls one library function and prints the outcome. Commands are
grouped as sub-applications (``config``, ``phantoms``, ``models``, ``deliveries``) the way an
administrator thinks of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from osteonode.config import ConfigError, NodeConfig, check_config, load_config

app = typer.Typer(
    name="osteonode",
    help="DICOM node for opportunistic osteoporosis screening on plain radiographs.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Check and show the node configuration.", no_args_is_help=True)
phantoms_app = typer.Typer(help="Synthetic radiographs with known ground truth.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(phantoms_app, name="phantoms")

console = Console()
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Node configuration file (default: $OSTEONODE_CONFIG, else node_config/node.toml,"
        " else the embedded defaults).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _load(config_path: Path | None) -> NodeConfig:
    """Load the configuration or exit with every problem listed."""
    try:
        return load_config(config_path)
    except ConfigError as error:
        Console(stderr=True).print(str(error), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate a configuration and report every bad key with the reason."""
    problems = check_config(config)
    if not problems:
        console.print("configuration OK")
        return
    for problem in problems:
        console.print(
            f"[red]{escape(problem.key)}[/red]: {escape(problem.reason)}", highlight=False, soft_wrap=True
        )
    raise typer.Exit(code=2)


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the configuration in force (the file over the embedded defaults) as JSON."""
    print(json.dumps(_load(config).model_dump(mode="json"), indent=2))


@app.command("route")
def route(
    files: Annotated[list[Path], typer.Argument(help="DICOM files to route.", exists=False)],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show, for each file, the pipeline it goes to or why it is skipped, and the deciding rule."""
    from osteonode.routing import Route, route_file

    settings = _load(config).routing
    rows = []
    for file in files:
        decision = route_file(file, settings)
        if isinstance(decision, Route):
            rows.append({"file": str(file), "pipeline": decision.pipeline.value, "skip": None,
                         "detail": None, "rule": decision.rule})
        else:
            rows.append({"file": str(file), "pipeline": None, "skip": decision.reason.value,
                         "detail": decision.detail, "rule": decision.rule})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("file", "decision", "rule", "detail")
    for row in rows:
        decision_text = row["pipeline"] or f"[yellow]skip: {row['skip']}[/yellow]"
        table.add_row(escape(row["file"]), decision_text, escape(row["rule"] or "(node check)"), escape(row["detail"] or ""))
    console.print(table)


if __name__ == "__main__":
    app()
