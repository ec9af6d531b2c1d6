"""Storage write/read benchmark (same as ``atlas bench write``)."""

import sys

from atlas.cli.app import app

if __name__ == "__main__":
    app(["bench", "write", *sys.argv[1:]])
