"""``python -m osteonode``: the same command line as the ``osteonode`` script."""

from osteonode.cli import app

app(prog_name="osteonode")
