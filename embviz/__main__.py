import sys

from embviz.cli import main

sys.exit(main())
