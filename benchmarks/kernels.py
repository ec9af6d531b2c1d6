"""Native kernels vs numpy benchmark (same as ``atlas bench kernels``)."""

import sys

from atlas.cli.app import app

if __name__ == "__main__":
    app(["bench", "kernels", *sys.argv[1:]])
