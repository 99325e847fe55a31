#!/usr/bin/env python
"""Django's command-line utility, with one-line errors for bad configuration."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from scaling.ops.preflight import explain_failures

    with explain_failures():
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
