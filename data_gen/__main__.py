import sys

from data_gen.cli import cli

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
