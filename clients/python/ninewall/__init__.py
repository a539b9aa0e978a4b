"""A client for the ninewall daemon (`ninewall serve`), for agent runtimes.

No dependencies beyond the standard library. The daemon decides who the
caller is from the socket's peer credentials (this process's uid), checks the
worker's roles, runs the MBU in a sandbox and records everything; this module
only speaks its protocol (version 2: a first line, the output in frames, an
end line).

    import ninewall
    r = ninewall.call("code_generate_new", ["-c", "print(6 * 7)"])
    r.exit_code, r.stdout          # ExitCode.OK / 0, b"42\\n"

    rec = ninewall.llm_call(model="m", prompt=p, response=text, purpose="plan")
    ninewall.call("reason", ["-c", code], caused_by=rec)   # linked in the log
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

__all__ = [
    "ExitCode",
    "Result",
    "Refused",
    "DaemonError",
    "call",
    "llm_call",
    "note",
    "SYSTEM_SOCKET",
]

#: The system daemon's socket (systemd/ninewall.socket).
SYSTEM_SOCKET = "/run/ninewall/ninewall.sock"


class ExitCode(enum.IntEnum):
    """ninewall's own exit codes (shared/DESIGN.md); any other value is the
    MBU's own exit code, passed through."""

    OK = 0
    USAGE = 2
    TIMEOUT = 124
    SANDBOX = 125
    NOT_EXECUTABLE = 126
    NOT_FOUND = 127
    SIGNALED = 128  # 128 + N: killed by signal N


class DaemonError(Exception):
    """The daemon could not be reached, or spoke out of protocol."""


class Refused(Exception):
    """The daemon refused the request (policy gate, bad request, busy)."""


@dataclass
class Result:
    """How an execution went."""

    exit_code: int
    exec_id: Optional[str]
    stdout: bytes = b""
    stderr: bytes = b""
    limit: Optional[str] = None
    messages: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def code(self):
        """The exit code as an :class:`ExitCode` where it is one of ninewall's."""
        try:
            return ExitCode(self.exit_code)
        except ValueError:
            return self.exit_code


def _socket_path(path: Optional[str]) -> str:
    return path or os.environ.get("NINEWALL_SOCKET") or SYSTEM_SOCKET


def _connect(path: Optional[str], timeout: Optional[float]) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(_socket_path(path))
    except OSError as e:
        s.close()
        raise DaemonError(f"cannot reach the daemon at {_socket_path(path)}: {e}") from e
    return s


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DaemonError("the daemon closed the connection before the end of the run")
    return data


def call(
    mbu: str,
    args: Sequence[str] = (),
    *,
    stdin: Union[str, bytes] = "",
    workspace: Optional[str] = None,
    caused_by: Optional[str] = None,
    socket_path: Optional[str] = None,
    on_stdout: Optional[Callable[[bytes], None]] = None,
    on_stderr: Optional[Callable[[bytes], None]] = None,
    timeout: Optional[float] = None,
) -> Result:
    """Runs `mbu` with `args` through the daemon and waits for its end.

    Output is collected into the result, or handed to `on_stdout` /
    `on_stderr` as it arrives (then not collected). `timeout` bounds each
    wait on the socket; when it passes, the connection is closed, which
    the daemon takes as a cancel (the run is ended, recorded `cancelled`),
    and :class:`TimeoutError` is raised. Raises :class:`Refused` when the
    daemon refuses, :class:`DaemonError` when it cannot be reached.
    """
    request: dict = {"v": 2, "mbu": mbu, "args": list(args)}
    if isinstance(stdin, bytes):
        request["stdin_base64"] = base64.b64encode(stdin).decode("ascii")
    else:
        request["stdin"] = stdin
    if workspace is not None:
        request["workspace"] = os.path.abspath(workspace)
    if caused_by is not None:
        request["caused_by"] = caused_by
    out, err = bytearray(), bytearray()
    with _connect(socket_path, timeout) as s:
        s.sendall(json.dumps(request).encode() + b"\n")
        f = s.makefile("rb")
        first = f.readline()
        if not first:
            raise DaemonError("the daemon closed the connection without an answer")
        start = json.loads(first)
        if not start.get("ok"):
            raise Refused(start.get("error") or "refused")
        if start.get("v") != 2:
            end = start
        else:
            while True:
                kind = _read_exact(f, 1)
                if kind in (b"o", b"e"):
                    (n,) = struct.unpack(">I", _read_exact(f, 4))
                    data = _read_exact(f, n)
                    sink = on_stdout if kind == b"o" else on_stderr
                    if sink is not None:
                        sink(data)
                    else:
                        (out if kind == b"o" else err).extend(data)
                elif kind == b"{":
                    end = json.loads(b"{" + f.readline())
                    break
                else:
                    raise DaemonError(f"the daemon sent a frame of unknown kind {kind!r}")
    if not end.get("ok"):
        raise Refused(end.get("error") or "not run")
    out.extend((end.get("stdout") or "").encode())
    err.extend((end.get("stderr") or "").encode())
    return Result(
        exit_code=int(end.get("exit_code", ExitCode.SANDBOX)),
        exec_id=end.get("exec"),
        stdout=bytes(out),
        stderr=bytes(err),
        limit=end.get("limit"),
        messages=list(end.get("messages") or []),
    )


def _record(record: dict, socket_path: Optional[str]) -> str:
    with _connect(socket_path, 30) as s:
        s.sendall(json.dumps({"record": record}).encode() + b"\n")
        answer = json.loads(s.makefile("rb").readline() or b"{}")
    if not answer.get("ok"):
        raise Refused(answer.get("error") or "record refused")
    return answer["record"]


def llm_call(
    *,
    model: str,
    prompt: str,
    response: str,
    purpose: Optional[str] = None,
    tokens_in: Optional[int] = None,
    tokens_out: Optional[int] = None,
    latency_ms: Optional[int] = None,
    socket_path: Optional[str] = None,
) -> str:
    """Puts a model call in the provenance chain: the prompt's and the
    response's SHA-256 and sizes (never the texts). Returns the record's id,
    for `call(..., caused_by=id)`."""
    p, r = prompt.encode(), response.encode()
    record = {
        "kind": "llm.call",
        "model": model,
        "prompt_sha256": hashlib.sha256(p).hexdigest(),
        "response_sha256": hashlib.sha256(r).hexdigest(),
        "prompt_bytes": len(p),
        "response_bytes": len(r),
    }
    for k, v in (("purpose", purpose), ("tokens_in", tokens_in), ("tokens_out", tokens_out), ("latency_ms", latency_ms)):
        if v is not None:
            record[k] = v
    return _record(record, socket_path)


def note(text: str, *, socket_path: Optional[str] = None) -> str:
    """Puts a free-form note in the chain; returns its id."""
    return _record({"kind": "agent.note", "text": text}, socket_path)
