"""``python -m steplab`` runs the CLI.

A process that joined a torch.distributed process group (a rank of
``steplab train --nproc``) ends through :func:`steplab.train.teardown.exit_process`:
gloo's worker threads can abort the interpreter's teardown (that module's docstring).
"""

import sys
import traceback

from steplab.cli import main


def _run() -> int:
    try:
        return main()
    except BaseException:
        teardown = sys.modules.get("steplab.train.teardown")
        if teardown is None or not teardown.joined():
            raise
        traceback.print_exc()
        return 1


code = _run()
teardown = sys.modules.get("steplab.train.teardown")
if teardown is not None and teardown.joined():
    teardown.exit_process(code)
sys.exit(code)
