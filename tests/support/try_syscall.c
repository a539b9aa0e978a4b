/* try-syscall: makes one system call from inside a sandbox and prints what the
 * kernel answered: "NAME ok" or "NAME ERRNO-NAME". Built statically by the
 * tests, so it needs nothing in the sandbox but itself. Every call is safe to
 * make unsandboxed: bad or empty arguments, no effect on the host, except the
 * file calls (chmod, open_creat, mkdir, mknod, openat2), which act on the path
 * they are given, and inotify_watches, which makes files in the working
 * directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

static int report(const char *name, long r) {
    if (r < 0)
        printf("%s %s\n", name, strerrorname_np(errno));
    else
        printf("%s ok\n", name);
    fflush(stdout);
    return 0;
}

struct named { const char *name; long nr; };
#define N(x) { #x, SYS_##x }
static const struct named table[] = {
    N(io_uring_setup), N(io_uring_enter), N(io_uring_register), N(ptrace), N(process_vm_readv),
    N(process_vm_writev), N(bpf), N(perf_event_open), N(userfaultfd), N(kexec_load), N(kexec_file_load),
    N(init_module), N(finit_module), N(delete_module), N(mount), N(umount2), N(pivot_root), N(move_mount),
    N(open_tree), N(fsopen), N(fsconfig), N(fsmount), N(fspick), N(mount_setattr), N(chroot), N(unshare),
    N(setns), N(keyctl), N(add_key), N(request_key), N(open_by_handle_at), N(name_to_handle_at), N(clone3),
    N(swapon), N(swapoff), N(reboot), N(acct), N(quotactl), N(syslog), N(settimeofday), N(clock_settime),
    N(clock_adjtime), N(adjtimex), N(vhangup),
#ifdef __x86_64__
    N(iopl), N(ioperm), N(modify_ldt), N(uselib),
#endif
    N(getpid), N(socket), N(setuid), N(mknodat),
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: try-syscall CALL [NAME]\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "raw") && argc == 3) {
        for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
            if (!strcmp(table[i].name, argv[2]))
                return report(argv[2], syscall(table[i].nr, 0, 0, 0, 0, 0, 0));
        printf("%s unknown\n", argv[2]);
        return 3;
    }
    if (!strcmp(c, "getpid")) return report(c, syscall(SYS_getpid));
    if (!strcmp(c, "socket")) return report(c, socket(AF_INET, SOCK_STREAM, 0));
    if (!strcmp(c, "clone3")) {
        unsigned long long args[11] = {0};
        args[4] = SIGCHLD; /* exit_signal */
        long r = syscall(SYS_clone3, args, sizeof args);
        if (r == 0) _exit(0);
        if (r > 0) waitpid((pid_t)r, NULL, 0);
        return report(c, r);
    }
    if (!strcmp(c, "clone") || !strcmp(c, "clone_newuser") || !strcmp(c, "clone_newnet")) {
        long flags = SIGCHLD;
        if (!strcmp(c, "clone_newuser")) flags |= CLONE_NEWUSER;
        if (!strcmp(c, "clone_newnet")) flags |= CLONE_NEWNET;
        long r = syscall(SYS_clone, flags, 0, 0, 0, 0);
        if (r == 0) _exit(0);
        if (r > 0) waitpid((pid_t)r, NULL, 0);
        return report(c, r);
    }
    if (!strcmp(c, "tiocsti")) { char x = 'x'; return report(c, ioctl(0, TIOCSTI, &x)); }
    if (!strcmp(c, "tioclinux")) { char x = 0; return report(c, ioctl(0, TIOCLINUX, &x)); }
    if (!strcmp(c, "tcgets")) { struct termios t; return report(c, ioctl(0, TCGETS, &t)); }
    if (!strcmp(c, "personality_query")) return report(c, personality(0xffffffff));
    if (!strcmp(c, "personality_linux")) return report(c, personality(PER_LINUX));
    if (!strcmp(c, "personality_exec")) return report(c, personality(PER_LINUX | READ_IMPLIES_EXEC));
    if (!strcmp(c, "memfd")) return report(c, memfd_create("x", MFD_CLOEXEC));
    if (!strcmp(c, "memfd_exec")) return report(c, memfd_create("x", MFD_CLOEXEC | 0x0010U /* MFD_EXEC */));
    if (!strcmp(c, "memfd_noexec")) return report(c, memfd_create("x", MFD_CLOEXEC | MFD_NOEXEC_SEAL));
#ifdef __x86_64__
    if (!strcmp(c, "int80")) {
        long r;
        /* getpid through the i386 entry point */
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
        return report(c, r < 0 ? (errno = (int)-r, -1) : r);
    }
    if (!strcmp(c, "x32")) return report(c, syscall(0x40000000L | 39 /* x32 getpid */));
#endif
    /* Wall 8's argument guards: socket families, setid modes. */
    if (!strcmp(c, "socket_family") && (argc == 4 || argc == 5))
        return report(c, socket(atoi(argv[2]), atoi(argv[3]), argc == 5 ? atoi(argv[4]) : 0));
    if (!strcmp(c, "socketpair_family") && argc == 3) {
        int sv[2];
        return report(c, socketpair(atoi(argv[2]), SOCK_STREAM, 0, sv));
    }
    /* MODE is octal; PATH is made (0600) first where the call needs a file. */
    if (argc == 4 && (!strcmp(c, "chmod") || !strcmp(c, "fchmod") || !strcmp(c, "fchmodat"))) {
        int fd = open(argv[2], O_CREAT | O_WRONLY, 0600);
        mode_t mode = (mode_t)strtol(argv[3], NULL, 8);
        if (fd < 0) return report("create", -1);
        if (!strcmp(c, "chmod")) return report(c, syscall(SYS_chmod, argv[2], mode));
        if (!strcmp(c, "fchmod")) return report(c, fchmod(fd, mode));
        return report(c, fchmodat(AT_FDCWD, argv[2], mode, 0));
    }
    if (argc == 4 && !strcmp(c, "open_creat"))
        return report(c, open(argv[2], O_CREAT | O_WRONLY, (mode_t)strtol(argv[3], NULL, 8)));
    if (argc == 4 && !strcmp(c, "mkdir"))
        return report(c, mkdir(argv[2], (mode_t)strtol(argv[3], NULL, 8)));
    if (argc == 4 && !strcmp(c, "mknod"))
        return report(c, mknod(argv[2], S_IFREG | (mode_t)strtol(argv[3], NULL, 8), 0));
    if (argc == 3 && !strcmp(c, "openat2")) {
        struct { unsigned long long flags, mode, resolve; } how = { O_CREAT | O_WRONLY, 06755, 0 };
        return report(c, syscall(SYS_openat2, AT_FDCWD, argv[2], &how, sizeof how));
    }
    /* Wall 9's per-namespace counts: how many of N inotify instances (or
     * watches, on files made in the working directory) the kernel gives,
     * and what stopped it; then they are held until stdin ends. */
    if (argc == 3 && (!strcmp(c, "inotify_instances") || !strcmp(c, "inotify_watches"))) {
        int n = atoi(argv[2]), got = 0, watches = !strcmp(c, "inotify_watches");
        int fd = watches ? inotify_init1(IN_CLOEXEC) : 0;
        const char *why = "all";
        for (; got < n; got++) {
            char name[32];
            snprintf(name, sizeof name, "w%d", got);
            int made = watches ? open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0600) : 0;
            if (made < 0 || (watches ? inotify_add_watch(fd, name, IN_MODIFY) : inotify_init1(IN_CLOEXEC)) < 0) {
                why = strerrorname_np(errno);
                break;
            }
            if (watches) close(made);
        }
        printf("%s %d %s\n", c, got, why);
        fflush(stdout);
        char byte;
        while (read(0, &byte, 1) > 0) {}
        return 0;
    }
    printf("%s unknown\n", c);
    return 3;
}
