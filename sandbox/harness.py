"""In-container entry program (PID 1 of every sandbox container).

It is passed as ``python3 -I -S -c <this source>`` so the image never needs a rebuild when
it changes; it uses only the standard library of ``python3-minimal``. Protocol:

1. Block on stdin for ONE line: the job as JSON ``{"nonce", "runtime", "code", "input",
   "env", "output_bytes"}`` (a pooled container waits here until it is used).
2. Write ``/task/input.json`` and the code, then fork the user process (a forked
   interpreter for python, ``/bin/sh`` for shell) with only the job's environment, stdin
   ``/dev/null``, stdout/stderr inherited, ``oom_score_adj`` 1000 and an address-space limit.
3. When it exits, SIGKILL every other process in the container (``kill(-1)`` from PID 1),
   reap them, read the output, and write an end marker with the nonce to stdout and a
   marker followed by a JSON record to stderr. The host reads up to both markers.
4. Block on stdin until the host kills the container (so cgroup stats can still be read).

Process mode (``sandbox.process``, no container: e.g. inside an AWS Lambda function): the job also
carries ``root`` (a fresh working directory instead of ``/task``) and ``process: true``. The harness
is then not PID 1, so step 3 cannot ``kill(-1)``: it makes itself a child subreaper (orphans of the
user's processes are re-parented to it) and kills its descendants until none is left.

The record is informative only: time, memory and stream-size limits are enforced on the
host, so a user who forges a record can only misreport their own task's output.
"""

# ruff: noqa: SIM105, UP031  (kept plain: this runs inside the container)
import json
import os
import resource
import signal
import sys

CODE_PY = "/task/main.py"
CODE_SH = "/task/main.sh"
INPUT = "/task/input.json"
OUTPUT = "/task/output/output.json"
STATUS = "/task/.status.json"
RETURN = "/task/.return.json"
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


def _write_fd(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_fd(fd, data)
    finally:
        os.close(fd)


def _status(obj):
    try:
        _write(STATUS, json.dumps(obj, default=str).encode())
    except Exception:
        pass


def _set_root(job):
    """Paths under the job's root (``/task`` in a container, a fresh directory in process mode)."""
    global CODE_PY, CODE_SH, INPUT, OUTPUT, STATUS, RETURN
    root = job.get("root") or "/task"
    CODE_PY, CODE_SH, INPUT = root + "/main.py", root + "/main.sh", root + "/input.json"
    OUTPUT, STATUS, RETURN = root + "/output/output.json", root + "/.status.json", root + "/.return.json"
    return root


def _prepare_child(job):
    """Common set-up in the forked child before running user code."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    mem = int(job.get("memory_bytes") or 0)
    if mem > 0:
        cap = max(2 * mem, mem + 256 * 2**20)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        except (ValueError, OSError):
            pass
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(job.get("root") or "/task")
    for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    env = dict(BASE_ENV)
    if job.get("process"):  # no private /tmp: the working directory is the only scratch space
        env.update({"HOME": job["root"], "TMPDIR": job["root"] + "/tmp"})
    env.update({str(k): str(v) for k, v in (job.get("env") or {}).items()})
    return env


def _user_frame(tb):
    """Skip harness frames so tracebacks start at the user's code."""
    first = tb
    while tb is not None and tb.tb_frame.f_code.co_filename != CODE_PY:
        tb = tb.tb_next
    return tb or first


def _run_python(job, env):
    import traceback

    os.environ.clear()
    os.environ.update(env)
    sys.argv = [CODE_PY]
    code = job["code"]
    try:
        compiled = compile(code, CODE_PY, "exec")
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        _status({"exception": type(exc).__name__, "line": line,
                 "message": getattr(exc, "msg", None) or str(exc)})
        sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        return 1
    namespace = {"__name__": "__main__", "__file__": CODE_PY, "__builtins__": __builtins__}
    try:
        exec(compiled, namespace)
        fn = namespace.get("main")
        if not callable(fn):
            _status({"main": False})
            return 0
        result = fn(job["input"])
        try:
            data = json.dumps(result, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            _status({"main": True, "output_error": "invalid",
                     "message": "return value of main() is not JSON-serialisable: %s" % exc})
            return 0
        if len(data) > int(job["output_bytes"]):
            _status({"main": True, "output_error": "too_large", "size": len(data)})
            return 0
        if result is not None:
            _write(RETURN, data)
        _status({"main": True})
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        sys.stderr.write(str(exc.code) + "\n")
        return 1
    except BaseException as exc:  # noqa: BLE001 - any user exception
        tb = _user_frame(exc.__traceback__)
        line = None
        walk = tb
        while walk is not None:
            if walk.tb_frame.f_code.co_filename == CODE_PY:
                line = walk.tb_lineno
            walk = walk.tb_next
        _status({"exception": type(exc).__name__, "line": line, "message": str(exc)[:2000]})
        try:
            traceback.print_exception(type(exc), exc, tb)
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            sys.stderr.write("%s\n" % type(exc).__name__)
        return 1


def _child(job):
    code = 1
    try:
        env = _prepare_child(job)
        if job["runtime"] == "shell":
            _write(CODE_SH, job["code"].encode(), 0o755)
            os.execve("/bin/sh", ["sh", CODE_SH], env)
        code = _run_python(job, env)
    except BaseException as exc:  # noqa: BLE001
        try:
            sys.stderr.write("sandbox child failed: %r\n" % (exc,))
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


def _subreaper():
    """Process mode: orphaned descendants are re-parented to us, so _kill_descendants finds them."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _children():
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[1].decode() == me:
                found.append(int(entry))
    return found


def _kill_descendants():
    """SIGKILL our children until none are left; as a subreaper, orphans come back to us as children."""
    while True:
        kids = _children()
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in kids:  # their orphans are ours now: the next round finds them
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _kill_all():
    """SIGKILL every process but ourselves (PID 1) and reap until none are left."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _read_output(limit):
    """Return (output, error, message) from the return file or the output file."""
    for path in (RETURN, OUTPUT):
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if size > limit:
            return None, "too_large", "%s is %d bytes (limit %d)" % (path, size, limit)
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return json.loads(raw.decode("utf-8")), None, None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, "invalid", "%s is not valid JSON: %s" % (path, exc)
    return None, None, None


def main():
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return
    job = json.loads(line)
    nonce = job.pop("nonce").encode()
    _set_root(job)
    if job.get("process"):
        _subreaper()
    _write(INPUT, json.dumps(job["input"]).encode())
    pid = os.fork()
    if pid == 0:
        _child(job)
    _, wstatus, usage = os.wait4(pid, 0)
    if job.get("process"):
        _kill_descendants()
    else:
        _kill_all()
    # The user process's own peak: it was forked from this small harness, so unlike the harness's
    # rusage seen from outside, it does not carry the peak of whatever process started the harness.
    record: dict = {"exit": None, "signal": None, "maxrss": usage.ru_maxrss * 1024}
    if os.WIFSIGNALED(wstatus):
        record["signal"] = os.WTERMSIG(wstatus)
    else:
        record["exit"] = os.WEXITSTATUS(wstatus)
    try:
        with open(STATUS, "rb") as f:
            record["status"] = json.loads(f.read().decode())
    except (OSError, ValueError):
        record["status"] = {}
    try:
        output, err, msg = _read_output(int(job["output_bytes"]))
    except Exception as exc:  # noqa: BLE001
        output, err, msg = None, "invalid", "cannot read output: %s" % exc
    st_err = record["status"].get("output_error")
    if st_err and not err:
        err, msg = st_err, record["status"].get("message") or st_err
    record.update(output=output, output_error=err, output_message=msg)
    body = json.dumps(record).encode()
    _write_fd(1, b"\x00TXEND:" + nonce + b"\n")
    _write_fd(2, b"\x00TXEND:" + nonce + b":" + body + b"\n")
    sys.stdin.buffer.read()


if __name__ == "__main__":
    main()
