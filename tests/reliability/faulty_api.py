"""Test-only launcher: the API under uvicorn with a fault at the one moment between writing a job's record and
sending its task (service.submit.enqueue). argv: port, fault: "die" (the process SIGKILLs itself, as a crash or an
OOM kill would) or a redis-server's pid (SIGKILLed, so the send that follows fails)."""

from __future__ import annotations

import os
import signal
import sys

import uvicorn

from service import submit

send = submit.enqueue


def faulty_enqueue(*args: object) -> None:
    fault = sys.argv[2]
    os.kill(os.getpid() if fault == "die" else int(fault), signal.SIGKILL)
    send(*args)


submit.enqueue = faulty_enqueue
uvicorn.run("service.app:create_app", factory=True, host="127.0.0.1", port=int(sys.argv[1]))
