import sys

from advex.cli import main

sys.exit(main())
