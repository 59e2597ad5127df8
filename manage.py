#!/usr/bin/env python
"""Django's command-line utility for the embrec demo project."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    from embrec.cli import friendly_errors

    with friendly_errors():
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
