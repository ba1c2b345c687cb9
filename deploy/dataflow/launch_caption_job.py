"""Flex template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE``): the caption job on Dataflow.

The template launcher runs ``python launch_caption_job.py --input=... --output=...
--model=... [--gpu=true] [Beam options]``. Every argument goes to
``pipelines.caption_pipeline.run`` unchanged; only the runner defaults to Dataflow.
"""

from __future__ import annotations

import json
import logging
import sys

from captioning.errors import UserError
from pipelines.caption_pipeline import run

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    argv = sys.argv[1:]
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in argv):
        argv.insert(0, "--runner=DataflowRunner")
    try:
        print(json.dumps(run(argv), default=str))
    except UserError as error:
        # One line in the launcher log says what was wrong with the parameters.
        print(f"caption job: error: {error}", file=sys.stderr)
        sys.exit(2)
