import sys

from serdistill.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
