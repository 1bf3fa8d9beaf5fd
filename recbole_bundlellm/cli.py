"""``python -m recbole_bundlellm.cli`` and the ``bundlellm`` script of older installs: the command
line lives in :mod:`recbole_bundlellm.commands.cli`."""

import sys

from recbole_bundlellm.commands.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
