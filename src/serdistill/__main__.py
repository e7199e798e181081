import sys

from serdistill.cli import main

sys.exit(main())
