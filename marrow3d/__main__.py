"""``python -m marrow3d`` is the same as the ``marrow3d`` command."""

from .cli.main import app

app(prog_name="marrow3d")
