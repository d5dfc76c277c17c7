"""`python -m ctcbridge ...`: the same command line as the `ctcbridge` script."""

from ctcbridge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
