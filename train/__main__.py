"""``python -m train`` / ``accelerate launch -m train --config ...``: the same entry as ``ragroute train``."""

import sys

from ragroute.errors import UserError
from train.cli import cli

if __name__ == "__main__":
    try:
        sys.exit(cli(sys.argv[1:]))
    except UserError as exc:
        print(f"ragroute train: error: {exc}", file=sys.stderr)
        sys.exit(2)
