"""The language-worker tests need azure-functions-runtime, which supports Python 3.13+ only: they run in
the 3.13 phase of scripts/test (devtools/functions_py313.sh), never skipped there."""

import sys

collect_ignore_glob = ["test_*.py"] if sys.version_info < (3, 13) else []
