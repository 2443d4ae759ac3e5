"""``python -m antgo train|test|export|verify CONFIG``."""
from antgo.cli import run

run()
