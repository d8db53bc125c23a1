"""`python -m cloudia.dlq`: the DLQ tool's command line (cloudia/dlq_cli.py)."""
import sys

from cloudia.dlq_cli import main

sys.exit(main())
