import sys

from .cli import main

if __name__ == "__main__":  # decode worker processes (spawn) re-import this module: they must not run the CLI
    sys.exit(main())
