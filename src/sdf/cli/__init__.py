"""The `sdf` command line: `sdf build` runs every stage; each stage also has its own command.

common.py holds the group and what every command shares; build.py the commands that write a run;
look.py the ones that only read.
"""

from sdf.cli import build, look  # noqa: F401 - importing them registers their commands
from sdf.cli.common import cli, main

__all__ = ["cli", "main"]
