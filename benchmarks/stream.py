"""Training-stream benchmark (same as ``atlas bench stream``)."""

import sys

from atlas.cli.app import app

if __name__ == "__main__":
    app(["bench", "stream", *sys.argv[1:]])
