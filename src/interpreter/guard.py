# ninewall interpreter guard (wall 2). ninewall writes this file, with the
# profile's settings in _CONFIG, read-only into the sandbox and starts the
# interpreter on it: python -I -S -B /.ninewall/guard.py (-c CODE | SCRIPT) ARGS.
#
# It installs an import hook (user code may import only the profile's modules;
# what an allowed module imports for itself still works) and an audit hook
# (PEP 578, cannot be removed) that refuses process creation, ctypes, sockets
# and opening files outside the workspace, then runs the user's code. It is
# not the last line: a bypass meets the kernel walls (mount view, Landlock,
# seccomp), which are built whatever this file does.
_CONFIG = None


def _install(config):
    import builtins
    import sys

    profile = config["profile"]
    allowed = frozenset(config["modules"])
    trusted = tuple(d.rstrip("/") + "/" for d in config["trusted"])
    writable = tuple(d.rstrip("/") + "/" for d in config["writable"])
    readable = trusted + writable + ("/proc/self/", "/dev/")
    getframe = sys._getframe
    original_import = builtins.__import__
    listing = ", ".join(sorted(allowed)) or "none"
    denied_modules = frozenset(config["denied_modules"]) - allowed

    def refused(what):
        return f"{what} is not allowed by profile {profile!r}"

    modules = sys.modules

    def from_user(frame):
        # Library code: a loaded module's own code, from the standard library,
        # a frozen module, or an allowed package. Anything else (the user's
        # script, exec'd strings, code compiled under a borrowed name into
        # fresh globals) is the user's.
        filename = frame.f_code.co_filename
        if not (filename.startswith(trusted) or filename.startswith("<frozen ")):
            return True
        module = modules.get(frame.f_globals.get("__name__"))
        return module is None or getattr(module, "__dict__", None) is not frame.f_globals

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if from_user(getframe(1)):
            if level:
                raise ImportError(refused(f"relative import of {name!r}"), name=name)
            top = name.partition(".")[0]
            if top not in allowed:
                raise ImportError(
                    refused(f"import of {name!r}") + f"; modules you may import: {listing}", name=name
                )
        return original_import(name, globals, locals, fromlist, level)

    blocked_prefixes = (
        "subprocess.",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "pty.",
        "ctypes.",
        "socket.",
        "sys.remote_exec",
        "cpython.run_",
        "os.add_dll_directory",
        "os.startfile",
        "webbrowser.",
        "urllib.",
        "ftplib.",
        "smtplib.",
        "http.",
    )

    def audit(event, args):
        if event.startswith(blocked_prefixes):
            raise PermissionError(refused(event.split(".")[0] + " (" + event + ")"))
        if event == "import":
            module = args[0] if args else ""
            if module.partition(".")[0] in denied_modules:
                raise ImportError(refused(f"import of {module!r}") + f"; modules you may import: {listing}", name=module)
        elif event == "open":
            path, mode = args[0], args[1]
            if isinstance(path, bytes):
                path = path.decode("utf-8", "surrogateescape")
            if isinstance(path, str):
                writing = mode is not None and any(c in str(mode) for c in "wax+")
                if path.startswith("/") and not path.startswith(writable if writing else readable):
                    raise PermissionError(refused(f"opening {path!r}") + "; the workspace is " + config["workspace"])

    sys.addaudithook(audit)
    builtins.__import__ = guarded_import
    sys.path[:] = list(config["path"])


def _run(config):
    import sys
    import traceback

    args = sys.argv[1:]
    if not args:
        sys.stderr.write("ninewall guard: give -c CODE or a script\n")
        raise SystemExit(2)
    if args[0] == "-c":
        if len(args) < 2:
            sys.stderr.write("ninewall guard: -c needs code\n")
            raise SystemExit(2)
        source, filename, argv = args[1], "<string>", ["-c"] + args[2:]
    else:
        with open(args[0], "rb") as f:
            source = f.read()
        filename, argv = args[0], args
    code = compile(source, filename, "exec")
    _install(config)
    sys.argv = argv
    main = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": filename}
    try:
        exec(code, main)
    except SystemExit:
        raise
    except BaseException as e:
        # The user's traceback, without the guard's own frames.
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename != __file__]
        sys.stderr.write(
            "Traceback (most recent call last):\n"
            + "".join(traceback.format_list(frames))
            + "".join(traceback.format_exception_only(type(e), e))
        )
        raise SystemExit(1)


_run(_CONFIG)
