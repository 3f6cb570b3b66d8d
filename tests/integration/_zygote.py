"""The zygote of the G6 kill tests: one process imports hybridsync once and forks one writer
per run, so a SIGKILL costs a fork, not an interpreter start (hundreds of kills stay within
seconds).

Protocol, one line each way: ``spawn ARG...`` forks a child that calls the test's
``writer(*ARG)`` (strings) and answers its pid; ``reap PID`` waits for it and answers
``signal N`` or ``exit N`` (3: the writer raised, traceback on the zygote's stderr);
``quit`` ends the zygote. The child never returns into the loop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

_LOOP = r"""
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "spawn":
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sys.stdin.close()
                writer(*cmd[1:])
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 3
            finally:
                os._exit(code)
        print(pid, flush=True)
    elif cmd[0] == "reap":
        _, status = os.waitpid(int(cmd[1]), 0)
        if os.WIFSIGNALED(status):
            print("signal", os.WTERMSIG(status), flush=True)
        else:
            print("exit", os.WEXITSTATUS(status), flush=True)
    elif cmd[0] == "quit":
        break
"""


class Zygote:
    """Runs ``writer_source`` (which defines ``writer(*args)`` and may read ``sys.argv``)
    followed by the command loop, with ``argv`` as its arguments."""

    def __init__(self, tmp: Path, writer_source: str, *argv: str) -> None:
        self.stderr_path = tmp / "zygote.err"
        self._err = self.stderr_path.open("w")
        env = {**os.environ, "PYTHONWARNINGS": "error", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", writer_source + _LOOP, *argv], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._err, text=True, env=env, bufsize=1,
        )

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, f"zygote died: {self.stderr_path.read_text()[-2000:]}"
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError, BrokenPipeError):
                self.ask("quit")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._err.close()
