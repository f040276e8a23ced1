#!/usr/bin/env python3
"""mrsynth command line; `python run.py --help` lists the commands (train is the default)."""
import sys

from mrsynth.cli import main

if __name__ == "__main__":
    sys.exit(main())
