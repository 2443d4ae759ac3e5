"""``python -m antgo train|test|export|verify CONFIG``."""
import sys

from antgo.cli import main

sys.exit(main())
