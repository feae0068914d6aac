"""The worker: grades one submission and sends its result to the main process over a pipe.

``python -m labkit.grading.worker FD LAB`` imports what grading lab LAB needs (a second or two, spent while
the workers before it still grade), then reads the job (JSON) from stdin and writes the result (JSON) to the
file descriptor FD, a pipe from the main process: a channel that no student code can reach (the kernel and
the check servers are started without it, and nothing is written to a shared folder). With a sandbox the
worker itself runs in its own box (``sandbox.worker_command``) and starts every process that runs student code,
the kernel and each check's MLServer, in a box nested inside it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    channel = int(argv[1])
    os.set_inheritable(channel, False)  # no process the worker starts gets it
    # nbformat imports jsonschema, which imports rfc3987_syntax (when installed) for its "iri" formats alone, and
    # that builds a grammar: about 1 s of CPU, half of what a worker spends on imports, for a format that the
    # notebook schema never uses. Without it jsonschema checks every other format as before.
    sys.modules.setdefault("rfc3987_syntax", None)
    import jupyter_client.manager  # noqa: F401  (imported now, before the job comes)
    import nbclient  # noqa: F401

    from labkit import serving
    from labkit.checks import names
    from labkit.grading import sandbox
    from labkit.grading.lab import Lab, Options
    from labkit.grading.notebook import grade_notebook

    names(argv[2])  # the lab's checks
    job = json.loads(sys.stdin.read())

    policy = sandbox.Policy(**job["policy"]) if job.get("policy") else None
    if policy is not None:
        # A check that serves the student's runtime starts MLServer in a box like the kernel's, in this
        # worker's loopback-only network so that the check reaches it.
        serving.launcher = lambda command, writable, readable, cwd: policy.wrap(
            command, writable, cwd=cwd, own_network=False, extra_readable=readable)
    lab = Lab.find(job["lab"], job["solutions"])
    result = grade_notebook(Path(job["path"]), lab, student=job["student"], key=bytes.fromhex(job["key"]),
                            options=Options(**job["options"]), marker=job["marker"], policy=policy)
    result.file = job["file"]  # as the instructor named it
    with os.fdopen(channel, "wb") as out:
        out.write(json.dumps({**result.record(), "seconds": result.seconds}).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
