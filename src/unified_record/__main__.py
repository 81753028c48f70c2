"""`python -m unified_record` runs the command line."""

from unified_record.cli import app

app(prog_name="unified-record")
