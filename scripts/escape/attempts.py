# Escape attempts, one per function. Run as:  python3 attempts.py NAME
# Each prints one line: "RESULT ESCAPED <what>" when the attempt got what it
# wanted, "RESULT BLOCKED <errno or why>" when the host refused it. A process
# killed by a signal prints nothing: the harness reports the signal.
#
# Every attempt is bounded and, run outside a sandbox, touches only what the
# harness made for it (canaries under NW_SCRATCH, its listeners) or restores
# what it changes: the harness runs each once unsandboxed to prove it works.
import errno, os, sys

# The harness passes what the attempts aim at as argv[2]: "key=value,key=value"
# (no json: the interpreter guard would refuse the import before any attempt).
C = dict(kv.split("=", 1) for kv in (sys.argv[2].split(",") if len(sys.argv) > 2 else []))
S = C.get("scratch", "/nonexistent")         # host scratch dir (canaries)
CANARY = C.get("canary", "/nonexistent")     # a host file with a secret
HOST_PID = int(C.get("host_pid", "1"))       # the harness's host pid
TCP = int(C.get("tcp", "1"))
UDP = int(C.get("udp", "1"))
ABSTRACT = C.get("abstract", "none")
UNIX_PATH = C.get("unix", "/nonexistent")
HOST_NAME = C.get("hostname", "")
RUN = C.get("run", "")
SCRATCH_ID = C.get("scratch_id", "")          # st_dev:st_ino of the scratch dir
W = "/work" if os.path.isdir("/work") and os.access("/work", os.W_OK) else S  # writable place


def escaped(what):
    print("RESULT ESCAPED", what, flush=True)
    sys.exit(0)


def blocked(why):
    print("RESULT BLOCKED", why, flush=True)
    sys.exit(0)


def err(e):
    return errno.errorcode.get(getattr(e, "errno", 0) or 0, type(e).__name__)


def libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def raw(nr, *args):
    """A raw syscall through libc's syscall(2); returns (result, errno)."""
    import ctypes
    c = libc()
    c.syscall.restype = ctypes.c_long
    r = c.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return r, ctypes.get_errno()


def try_open(path, mode="r"):
    try:
        with open(path, mode) as f:
            if "r" in mode:
                f.read(64)
        escaped(f"opened {path} ({mode})")
    except OSError as e:
        blocked(err(e))


def child_status(fn):
    """Runs fn in a child; returns its exit status or ('signal', n)."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        except OSError as e:
            os._exit(100 + (e.errno or 0) % 100)
        os._exit(0)
    st = os.waitpid(pid, 0)[1]
    return os.waitstatus_to_exitcode(st)


def try_exec(argv):
    code = child_status(lambda: os.execv(argv[0], argv))
    if code == 42:
        escaped(f"executed {argv[0]}")
    blocked(errno.errorcode.get(code - 100, f"exit {code}") if code >= 100 else f"exit {code}")


PRINT42 = "import os; os._exit(42)"

# --- filesystem -----------------------------------------------------------------
def fs_host_canary(): try_open(CANARY)
def fs_etc_shadow(): try_open("/etc/shadow")
def fs_etc_passwd(): try_open("/etc/passwd")
def fs_root_home():
    try:
        escaped(f"listed /root: {len(os.listdir('/root'))} entries")
    except OSError as e:
        blocked(err(e))
def fs_dotdot(): try_open(W + "/../../../../../../etc/passwd")
def fs_symlink():
    link = W + "/nw-link"
    try:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(CANARY, link)
    except OSError as e:
        blocked(err(e))
    try_open(link)
def fs_hardlink():
    target = W + "/nw-hardlink"
    try:
        os.link(CANARY, target)
        os.unlink(target)
        escaped("hard-linked the canary")
    except OSError as e:
        blocked(err(e))
def fs_proc_self_root(): try_open("/proc/self/root" + CANARY)
def fs_proc_1_root(): try_open("/proc/1/root" + CANARY)
def fs_open_by_handle():
    # name_to_handle_at on the canary, then open_by_handle_at.
    import ctypes
    c = libc()
    buf = ctypes.create_string_buffer(128 + 8)
    ctypes.memmove(buf, (128).to_bytes(4, "little"), 4)
    mount_id = ctypes.c_int()
    r = c.name_to_handle_at(-100, CANARY.encode(), buf, ctypes.byref(mount_id), 0)
    if r != 0:
        blocked(errno.errorcode.get(ctypes.get_errno(), "?"))
    fd = c.open_by_handle_at(os.open(os.path.dirname(CANARY), os.O_RDONLY), buf, os.O_RDONLY)
    if fd < 0:
        blocked(errno.errorcode.get(ctypes.get_errno(), "?"))
    escaped("opened a file by handle")
def fs_rename_into_readonly():
    src = W + "/nw-moved"
    open(src, "w").close()
    for dst in ("/usr/lib/python3.11/nw-moved", S + "/ro/nw-moved"):
        if os.path.isdir(os.path.dirname(dst)):
            try:
                os.rename(src, dst)
                os.rename(dst, src)
                escaped(f"renamed into {dst}")
            except OSError as e:
                blocked(err(e))
    blocked("no read-only tree visible")
def fs_setuid_file():
    import shutil, stat
    f = W + "/nw-suid"
    shutil.copyfile(sys.executable, f)
    try:
        os.chmod(f, 0o4755)
    except OSError as e:
        blocked(err(e))
    st = os.statvfs(f)
    if os.stat(f).st_mode & stat.S_ISUID and not st.f_flag & os.ST_NOSUID:
        escaped("a setuid file on a mount that honours it")
    blocked("nosuid")
def fs_device_node():
    try:
        os.mknod(W + "/nw-null", 0o20666, os.makedev(1, 3))
        os.unlink(W + "/nw-null")
        escaped("made a device node")
    except OSError as e:
        blocked(err(e))
def fs_proc_sys_write():
    p = "/proc/sys/kernel/domainname"
    try:
        cur = open(p).read()
        with open(p, "w") as f:
            f.write(cur)  # the same value: harmless outside a sandbox
        escaped("wrote /proc/sys")
    except OSError as e:
        blocked(err(e))
def fs_sys_write(): try_open("/sys/kernel/uevent_helper", "a")
def fs_dev_mem(): try_open("/dev/mem")
def fs_raw_disk():
    for d in ("/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda"):
        if os.path.exists(d):
            try_open(d, "rb")
    blocked("ENOENT: no disk device visible")
def fs_cgroup_write(): try_open("/sys/fs/cgroup/cgroup.procs", "a")
def fs_inherited_descriptor():
    # The harness leaks a descriptor on the host directory of the canary into
    # what it starts (as a careless caller would). Holding it is the escape:
    # getdents and fchdir on it need no path, so neither the mount view nor
    # Landlock (which checks at open) stands between it and the host.
    seen = []
    for fd in range(3, 1024):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        try:
            seen.append(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            seen.append(f"{fd}:?")
        if f"{st.st_dev}:{st.st_ino}" != SCRATCH_ID:
            continue
        try:
            got = os.open(os.path.basename(CANARY), os.O_RDONLY, dir_fd=fd)
            how = f"read {len(os.read(got, 200))} bytes of the canary beneath it"
        except OSError as e:
            how = f"opening the canary beneath it: {err(e)}"
        escaped(f"inherited descriptor {fd} on the host's canary directory; {how}")
    blocked("no inherited descriptor on the host's canary directory; open: " + (" ".join(seen) or "none beyond 0-2"))
def fs_mmap_exec_written():
    import mmap
    f = W + "/nw-code"
    with open(f, "wb") as out:
        out.write(b"\xc3" * 4096)
    fd = os.open(f, os.O_RDONLY)
    try:
        mmap.mmap(fd, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC, flags=mmap.MAP_PRIVATE)
        escaped("mapped a written file executable")
    except OSError as e:
        blocked(err(e))

# --- execution ------------------------------------------------------------------
def ex_shell(): try_exec(["/bin/sh", "-c", "exit 42"])
def ex_written():
    import shutil
    f = W + "/nw-python"
    shutil.copyfile(sys.executable, f)
    os.chmod(f, 0o755)
    try_exec([f, "-c", PRINT42])
def ex_memfd():
    try:
        fd = os.memfd_create("nw")
    except OSError as e:
        blocked(err(e))
    os.write(fd, open(sys.executable, "rb").read())
    code = child_status(lambda: os.execve(fd, [sys.executable, "-c", PRINT42], {}))
    if code == 42:
        escaped("executed a memfd")
    blocked(f"exit {code}")
def ex_execveat_written():
    import shutil
    f = W + "/nw-python2"
    shutil.copyfile(sys.executable, f)
    os.chmod(f, 0o755)
    fd = os.open(f, os.O_RDONLY)
    code = child_status(lambda: os.execve(fd, [f, "-c", PRINT42], {}))
    if code == 42:
        escaped("execveat of a written file")
    blocked(errno.errorcode.get(code - 100, f"exit {code}") if code >= 100 else f"exit {code}")
def ex_ldso_written():
    import shutil
    f = W + "/nw-python3"
    shutil.copyfile(sys.executable, f)
    ld = "/lib64/ld-linux-x86-64.so.2"
    code = child_status(lambda: os.execv(ld, [ld, f, "-c", PRINT42]))
    if code == 42:
        escaped("ran a written ELF through ld.so")
    blocked(f"exit {code}")
def ex_shebang_written():
    f = W + "/nw-script"
    with open(f, "w") as out:
        out.write(f"#!{sys.executable}\n{PRINT42}\n")
    os.chmod(f, 0o755)
    try_exec([f])
def ex_libc():
    # libc.so.6 is executable: run, it prints its version and exits 0.
    code = child_status(lambda: os.execv("/usr/lib/x86_64-linux-gnu/libc.so.6", ["libc.so.6"]))
    if code == 0:
        escaped("executed libc.so.6")
    blocked(errno.errorcode.get(code - 100, f"exit {code}") if code >= 100 else f"exit {code}")

# --- processes ------------------------------------------------------------------
def pr_ptrace_parent():
    import ctypes
    c = libc()
    target = os.getppid() if os.getppid() > 1 else HOST_PID
    # PTRACE_SEIZE attaches without stopping the target (outside a sandbox the
    # target is the harness, which must go on).
    if c.ptrace(0x4206, target, 0, 0) == 0:
        c.ptrace(17, target, 0, 0)  # PTRACE_DETACH
        escaped(f"attached to pid {target}")
    blocked(errno.errorcode.get(ctypes.get_errno(), "?"))
def pr_vm_writev():
    # Write to our own memory through process_vm_writev (harmless; the point is the syscall).
    import ctypes
    buf = ctypes.create_string_buffer(8)
    iov = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
    r, e = raw(311, os.getpid(), ctypes.addressof(iov), 1, ctypes.addressof(iov), 1, 0)
    if r >= 0:
        escaped("process_vm_writev works")
    blocked(errno.errorcode.get(e, "?"))
def pr_signal_supervisor():
    try:
        os.kill(HOST_PID, 0)
        escaped(f"signalled host pid {HOST_PID}")
    except OSError as e:
        blocked(err(e))
def pr_host_pids():
    if os.path.exists(f"/proc/{HOST_PID}"):
        escaped(f"sees host pid {HOST_PID}")
    blocked("host pids invisible")
def pr_double_fork():
    # The harness checks from outside that this sleeper is gone after the run.
    if os.fork() == 0:
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(8)", "nw-escape-orphan-" + RUN])
        os._exit(0)
    blocked("host checks")
def pr_kill_init():
    try:
        os.kill(1, 0)
        if os.getpid() == 1 or HOST_PID == 1:
            blocked("init is the host's")
        escaped("can signal pid 1")
    except OSError as e:
        blocked(err(e))
def pr_proc_1_environ(): try_open("/proc/1/environ")

# --- privileges and namespaces --------------------------------------------------
def pv_unshare_user():
    r, e = raw(272, 0x10000000)
    escaped("unshare(CLONE_NEWUSER)") if r == 0 else blocked(errno.errorcode.get(e, "?"))
def pv_unshare_mount():
    code = child_status(lambda: raw(272, 0x00020000)[0] == 0 and os._exit(42))
    escaped("unshare(CLONE_NEWNS)") if code == 42 else blocked(f"exit {code}")
def pv_setns():
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    r, e = raw(308, fd, 0)
    escaped("setns") if r == 0 else blocked(errno.errorcode.get(e, "?"))
def pv_mount():
    import ctypes
    d = W + "/nw-mnt"
    os.makedirs(d, exist_ok=True)
    c = libc()
    if c.mount(b"tmpfs", d.encode(), b"tmpfs", 0, None) == 0:
        c.umount2(d.encode(), 0)
        escaped("mounted a tmpfs")
    blocked(errno.errorcode.get(ctypes.get_errno(), "?"))
def pv_chroot():
    code = child_status(lambda: (os.chroot(W), os._exit(42)))
    escaped("chroot") if code == 42 else blocked(errno.errorcode.get(code - 100, f"exit {code}") if code >= 100 else f"exit {code}")
def pv_setuid0():
    code = child_status(lambda: (os.setuid(0), os._exit(42 if os.getuid() == 0 else 1)))
    escaped("setuid(0)") if code == 42 else blocked(errno.errorcode.get(code - 100, f"exit {code}") if code >= 100 else f"exit {code}")
def pv_capset():
    st = open("/proc/self/status").read()
    eff = int([l for l in st.splitlines() if l.startswith("CapEff")][0].split()[1], 16)
    escaped(f"holds capabilities {eff:#x}") if eff else blocked("no capabilities")
def pv_keyctl():
    r, e = raw(250, 0, -3, 0)  # KEYCTL_GET_KEYRING_ID, session
    escaped("keyctl") if r >= 0 else blocked(errno.errorcode.get(e, "?"))
def pv_bpf():
    import ctypes
    attr = (ctypes.c_uint32 * 30)(2, 4, 4, 1)  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
    r, e = raw(321, 0, ctypes.addressof(attr), ctypes.sizeof(attr))
    if r >= 0:
        os.close(r)
        escaped("bpf map created")
    blocked(errno.errorcode.get(e, "?"))
def pv_perf_event_open():
    import ctypes
    attr = (ctypes.c_uint8 * 128)()
    ctypes.memmove(attr, (1).to_bytes(4, "little") + (128).to_bytes(4, "little"), 8)  # PERF_TYPE_SOFTWARE, size
    r, e = raw(298, ctypes.addressof(attr), 0, -1, -1, 0)
    if r >= 0:
        os.close(r)
        escaped("perf_event_open")
    blocked(errno.errorcode.get(e, "?"))
def pv_userfaultfd():
    r, e = raw(323, 0)
    if r >= 0:
        os.close(r)
        escaped("userfaultfd")
    blocked(errno.errorcode.get(e, "?"))
def pv_tiocsti():
    import fcntl, termios
    try:
        master, slave = os.openpty()
    except OSError as e:
        blocked(err(e))
    try:
        fcntl.ioctl(slave, termios.TIOCSTI, b"x")
        escaped("TIOCSTI")
    except OSError as e:
        blocked(err(e))
def pv_personality():
    import ctypes
    c = libc()
    old = c.personality(0xFFFFFFFF)
    r = c.personality(0x0400000)  # READ_IMPLIES_EXEC
    if r != -1:
        c.personality(old)
        escaped("personality(READ_IMPLIES_EXEC)")
    blocked(errno.errorcode.get(ctypes.get_errno(), "?"))

# --- seccomp bypasses -----------------------------------------------------------
def sc_int80():
    import ctypes, mmap
    code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20 (getpid); int 0x80; ret
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    r = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
    escaped(f"int 0x80 returned {r}") if r > 0 else blocked(f"returned {r}")
def sc_x32():
    r, e = raw(0x40000000 | 39)
    escaped("x32 syscall") if r >= 0 else blocked(errno.errorcode.get(e, "?"))
def sc_clone3():
    import ctypes
    args = (ctypes.c_uint64 * 11)(0x10000000, 0, 0, 0, 17)  # CLONE_NEWUSER, exit_signal SIGCHLD
    r, e = raw(435, ctypes.addressof(args), ctypes.sizeof(args))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        escaped("clone3 with CLONE_NEWUSER")
    blocked(errno.errorcode.get(e, "?"))
def sc_io_uring():
    import ctypes
    params = (ctypes.c_uint8 * 120)()
    r, e = raw(425, 4, ctypes.addressof(params))
    if r >= 0:
        os.close(r)
        escaped("io_uring_setup")
    blocked(errno.errorcode.get(e, "?"))

# --- network --------------------------------------------------------------------
def nw_tcp_host():
    import socket
    try:
        s = socket.create_connection(("127.0.0.1", TCP), timeout=2)
        s.close()
        escaped("connected to the host's 127.0.0.1")
    except OSError as e:
        blocked(err(e))
def nw_udp_host():
    import socket
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"nw-escape", ("127.0.0.1", UDP))
        escaped("sent UDP (the harness checks receipt)")
    except OSError as e:
        blocked(err(e))
def nw_ipv6_host():
    import socket
    try:
        s = socket.create_connection(("::1", TCP), timeout=2)
        s.close()
        escaped("connected to the host's ::1")
    except OSError as e:
        blocked(err(e))
def nw_abstract_unix():
    import socket
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("\0" + ABSTRACT)
        escaped("connected to the host's abstract socket")
    except OSError as e:
        blocked(err(e))
def nw_path_unix():
    import socket
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(UNIX_PATH)
        escaped("connected to the host's unix socket")
    except OSError as e:
        blocked(err(e))
def nw_netlink():
    import socket
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        s.bind((0, 0))
        escaped("netlink socket")
    except OSError as e:
        blocked(err(e))
def nw_packet():
    import socket
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        escaped("packet socket")
    except OSError as e:
        blocked(err(e))
def nw_interfaces():
    import socket
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError as e:
        blocked(err(e))
    others = [n for n in names if n != "lo"]
    escaped(f"sees interfaces {others}") if others else blocked("only lo")

# --- resources (bounded: they succeed outside a sandbox) -------------------------
def rs_fork_bomb():
    pids = []
    try:
        for _ in range(150):
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(2)
                os._exit(0)
            pids.append(pid)
    except OSError as e:
        blocked(f"{err(e)} after {len(pids)} processes")
    finally:
        for p in pids:
            os.waitpid(p, 0)
    escaped("150 processes")
def rs_memory_bomb():
    try:
        x = bytearray(400 << 20)
        x[::4096] = b"x" * len(x[::4096])
        escaped("400 MiB")
    except MemoryError:
        blocked("MemoryError")
def rs_disk_fill():
    try:
        with open(W + "/nw-fill", "wb") as f:
            for _ in range(80):
                f.write(b"\0" * (1 << 20))
        os.unlink(W + "/nw-fill")
        escaped("wrote 80 MiB")
    except OSError as e:
        blocked(err(e))
def rs_cpu_spin():
    # 35 s of CPU: past the shipped profiles' cpu_seconds (30 and less).
    import time
    end = time.process_time() + 35
    while time.process_time() < end:
        pass
    escaped("35 s of CPU")
def rs_sleep_forever():
    # 65 s asleep: past the shipped profiles' wall_seconds (60 and less).
    import time
    time.sleep(65)
    escaped("slept 65 s")
def rs_fd_exhaustion():
    fds = []
    try:
        for _ in range(1024):
            fds.append(os.open("/dev/null", os.O_RDONLY))
        escaped("1024 descriptors")
    except OSError as e:
        blocked(f"{err(e)} after {len(fds)}")
    finally:
        for fd in fds:
            os.close(fd)

# --- information ----------------------------------------------------------------
def in_host_env():
    escaped("sees the host's environment") if "NW_HOST_SECRET" in os.environ else blocked("not in the environment")
def in_hostname():
    import socket
    escaped("sees the host's hostname") if socket.gethostname() == HOST_NAME else blocked(f"hostname {socket.gethostname()}")
def in_host_users():
    try:
        escaped(f"lists /home: {os.listdir('/home')}")
    except OSError as e:
        blocked(err(e))
def in_kernel_log(): try_open("/dev/kmsg")
def in_uptime():
    up = float(open("/proc/uptime").read().split()[0])
    escaped(f"host uptime {up:.0f}s") if up > 120 else blocked(f"uptime {up:.0f}s")
def in_host_mounts():
    n = len(open("/proc/self/mountinfo").read().splitlines())
    text = open("/proc/self/mountinfo").read()
    escaped(f"sees the host's mounts ({n})") if " /etc/hosts " in text or " /sys " in text else blocked(f"{n} sandbox mounts")


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    fn = globals().get(name)
    if not callable(fn) or name.startswith("_"):
        print("RESULT ERROR no such attempt", name)
        sys.exit(3)
    try:
        fn()
    except SystemExit:
        raise
    except BaseException as e:
        # Anything the host refused surfaces as an exception: that is a block.
        print("RESULT BLOCKED", type(e).__name__, str(e)[:80].replace("\n", " "), flush=True)
    print("RESULT ERROR attempt ended without a verdict", flush=True)
