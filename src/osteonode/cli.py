"""The ``osteonode`` command line: a thin shell over the library.

Each command parses its arguments, calls one library function and prints the outcome. Commands are
grouped as sub-applications (``config``, ``phantoms``, ``models``, ``deliveries``) the way an
administrator thinks of them.
"""

from __future__ import annotations

import typer

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


if __name__ == "__main__":
    app()
