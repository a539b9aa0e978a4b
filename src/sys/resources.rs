//! Wall 9: rlimits, and the supervisor's own resource use and reaping.

use libc::c_int;

use super::{check, retry, SysResult};

/// Sets a resource limit to (soft, hard), each lowered to the current hard
/// limit if that is lower: a limit is only ever tightened (child-safe).
pub fn lower_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> SysResult<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit.
    check(unsafe { libc::getrlimit(resource, &raw mut cur) })?;
    let hard = hard.min(cur.rlim_max);
    let new = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid rlimit.
    check(unsafe { libc::setrlimit(resource, &raw const new) }).map(drop)
}

/// Waits for any child, `EINTR` retried; returns (pid, status, CPU ms, max
/// RSS KiB) (child-safe).
pub fn wait_any() -> SysResult<(i32, c_int, u32, u32)> {
    retry(|| {
        let mut status: c_int = 0;
        // SAFETY: rusage is plain data, filled by wait4.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `ru` are valid and writable.
        let pid = check(unsafe { libc::wait4(-1, &raw mut status, 0, &raw mut ru) })?;
        let ms = |t: libc::timeval| t.tv_sec.unsigned_abs() * 1000 + t.tv_usec.unsigned_abs() / 1000;
        let cpu = ms(ru.ru_utime) + ms(ru.ru_stime);
        Ok((
            pid,
            status,
            u32::try_from(cpu).unwrap_or(u32::MAX),
            u32::try_from(ru.ru_maxrss).unwrap_or(u32::MAX),
        ))
    })
}

/// This process's own peak resident set size, in KiB (not its children's).
pub fn own_peak_rss_kib() -> i64 {
    // SAFETY: rusage is plain data, filled by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    ru.ru_maxrss
}

/// Keeps a long-lived, multi-threaded process's memory flat under glibc: one
/// malloc arena for all threads (not one per thread, each keeping its own free
/// memory), and large buffers (captured output) always in their own mappings,
/// returned to the kernel when freed (a fixed threshold also stops glibc from
/// raising it after the first large free).
pub fn keep_heap_flat() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread
    // of ours exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}
