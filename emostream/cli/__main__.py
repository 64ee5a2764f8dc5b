"""`python -m emostream.cli`, the same as the `emostream` console script."""

import sys

from emostream.cli import main

sys.exit(main())
