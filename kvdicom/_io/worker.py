"""A kvdicom worker process: ``python -m kvdicom._io.worker``, started by :mod:`kvdicom._io.process_pool`.

It imports kvdicom and nothing of the caller's (never the caller's ``__main__``), reads tasks from its stdin
and answers on its stdout: each message an 8-byte length and a pickle. Task: ``(function, args)``, a function
of kvdicom's at module level; answer: ``(True, result)`` or ``(False, exception)``. It exits at the end of its
stdin, that is when the process that started it closes the pipe or dies. Decoders that print would corrupt
the answers, so the protocol runs on private copies of the two descriptors and fds 0 and 1 go to /dev/null.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys

HEADER = struct.Struct("<Q")


def read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or None at the end of the stream (a partial message counts as the end)."""
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(fd: int, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    write_all(fd, HEADER.pack(len(data)) + data)


def receive(fd: int):
    """The next message, or raise EOFError at the end of the stream."""
    head = read_exactly(fd, HEADER.size)
    body = None if head is None else read_exactly(fd, HEADER.unpack(head)[0])
    if body is None:
        raise EOFError
    return pickle.loads(body)


def _answer(task) -> tuple:
    try:
        function, args = task
        return True, function(*args)
    except BaseException as exc:  # noqa: BLE001  the caller decides; a worker survives its tasks' errors
        return False, exc


def main() -> None:
    tasks, answers = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    sys.stdout = sys.stderr
    while True:
        try:
            task = receive(tasks)
        except EOFError:
            return
        ok, value = _answer(task)
        try:
            send(answers, (ok, value))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an unpicklable result or exception
            send(answers, (False, RuntimeError(f"{type(value).__name__}: {value} (not picklable: {exc})")))


if __name__ == "__main__":
    main()
