import sys

from atomshard.cli import main

sys.exit(main())
