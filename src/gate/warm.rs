//! The daemon's warm sandboxes: per MBU a worker holds, a few supervisors
//! started before anyone asks (`run --warm-fd`), whose sandboxes have the
//! walls that do not depend on the request already built: namespaces, the
//! execution's own identity, the filesystem view without the workspace, the
//! cgroup (the migration into it, which on cgroup v1 waits for an RCU grace
//! period, happens here, not while a caller waits), the network.
//!
//! A warm sandbox is used by one request and never again: it is taken out
//! of the pool, given the request, and runs it as a cold one would. The pool
//! is refilled by one thread, one sandbox at a time, while fewer executions
//! run than the machine has CPUs. A profile changed on disk is noticed
//! twice: this thread drops the sandboxes built from its old digest (it
//! looks every 2 s), and the supervisor itself refuses a request if its
//! profile's files are no longer the ones it loaded (the daemon then starts
//! the request cold).
//!
//! The warm supervisors are children of the refilling thread, which lives
//! as long as the daemon: they end with it (parent-death signal), and their
//! sandboxes with them, having recorded nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::exec::Warm;
use super::Gate;
use crate::provenance::AuditLog;
use crate::sandbox::cgroup::CgroupPool;

/// How long a warm sandbox may take to be built.
const BUILD_WITHIN: Duration = Duration::from_secs(30);
/// How long after a failed build the MBU is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// How often the profiles are looked at for edits.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The warm sandboxes, per MBU.
pub struct Pool {
    /// MBU → its profile and how many of it to keep, for every MBU the
    /// policy grants to a worker and keeps at least one of.
    profiles: BTreeMap<String, (PathBuf, usize)>,
    ready: Mutex<HashMap<String, Vec<Warm>>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Pool {
    /// A pool of warm sandboxes for each MBU `gate` grants to a worker (an
    /// MBU only a role nobody holds names is never asked for): as many as
    /// the policy's `[warm]` table says, else `per_mbu`.
    pub fn new(gate: &Gate, per_mbu: usize) -> Pool {
        let profiles = gate
            .workers
            .iter()
            .flat_map(|w| gate.capabilities(w))
            .filter_map(|mbu| {
                let keep = gate.warm.get(&mbu).copied().unwrap_or(per_mbu);
                let profile = super::profile_path(&gate.profiles, &mbu);
                (keep > 0).then_some((mbu, (profile, keep)))
            })
            .collect();
        Pool {
            profiles,
            ready: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// Whether it keeps none of any MBU (`--warm 0` and no `[warm]` count
    /// above 0 in the policy): then nothing refills it.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// A warm sandbox of `mbu`, if one is ready.
    pub fn take(&self, mbu: &str) -> Option<Warm> {
        let taken = self.ready.lock().ok()?.get_mut(mbu)?.pop();
        self.wake.notify_all();
        taken
    }

    /// How many are ready, per MBU.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.ready
            .lock()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.len())).collect())
            .unwrap_or_default()
    }

    /// Something changed (an execution ended): look again now.
    pub fn nudge(&self) {
        self.wake.notify_all();
    }

    /// Ends [`Pool::keep_filled`] and every warm sandbox not taken.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// The refilling thread's loop, until [`Pool::stop`]: drops sandboxes of
    /// a profile that changed, and builds one more wherever fewer are ready
    /// than its MBU keeps, unless `busy` says the machine is. Every warm
    /// sandbox left is ended before it returns.
    pub fn keep_filled(
        &self,
        log: &AuditLog,
        cgroups: Option<&Arc<CgroupPool>>,
        busy: &dyn Fn() -> bool,
        say: &dyn Fn(String),
    ) {
        let mut failed: HashMap<String, Instant> = HashMap::new();
        let mut looked: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            // Parsing every profile is not for each wake-up (one per
            // execution's end): the supervisor checks its own at each request.
            if looked.is_none_or(|at| at.elapsed() >= LOOK_EVERY) {
                self.drop_stale();
                looked = Some(Instant::now());
            }
            let next = self.profiles.iter().find(|(mbu, (_, keep))| {
                let have = self.counts().get(*mbu).copied().unwrap_or(0);
                have < *keep && failed.get(*mbu).is_none_or(|at| at.elapsed() >= RETRY_AFTER)
            });
            match next {
                Some((mbu, (profile, _))) if !busy() => match build(profile, log, cgroups) {
                    Ok(warm) => {
                        failed.remove(mbu);
                        if let Ok(mut ready) = self.ready.lock() {
                            ready.entry(mbu.clone()).or_default().push(warm);
                        }
                    }
                    Err(why) => {
                        if !failed.contains_key(mbu) {
                            say(format!("warm sandbox of {mbu}: {why}; its requests start cold"));
                        }
                        failed.insert(mbu.clone(), Instant::now());
                    }
                },
                _ => {
                    if let Ok(ready) = self.ready.lock() {
                        let _ = self.wake.wait_timeout(ready, LOOK_EVERY);
                    }
                }
            }
        }
        // Dropped outside the lock: each is reaped.
        let left: Vec<Warm> = self
            .ready
            .lock()
            .map(|mut r| r.drain().flat_map(|(_, v)| v).collect())
            .unwrap_or_default();
        drop(left);
    }

    /// Drops the warm sandboxes whose profile is no longer what is on disk.
    fn drop_stale(&self) {
        let mut stale = Vec::new();
        for (mbu, (profile, _)) in &self.profiles {
            let now = crate::profile::Profile::load(profile)
                .ok()
                .map(|p| crate::provenance::profile_digest(&p.files));
            if let Ok(mut ready) = self.ready.lock() {
                if let Some(list) = ready.get_mut(mbu) {
                    let (keep, old): (Vec<Warm>, Vec<Warm>) = std::mem::take(list)
                        .into_iter()
                        .partition(|w| w.profile_sha256.is_some() && w.profile_sha256 == now);
                    *list = keep;
                    stale.extend(old);
                }
            }
        }
        drop(stale);
    }
}

/// Starts a warm supervisor of `profile` (in a cgroup of `cgroups` if one
/// is free) and waits until its walls are built.
fn build(profile: &std::path::Path, log: &AuditLog, cgroups: Option<&Arc<CgroupPool>>) -> Result<Warm, String> {
    let mut warm = Warm::start(profile, log, cgroups).map_err(|e| format!("cannot start its supervisor: {e}"))?;
    warm.ready(BUILD_WITHIN)?;
    Ok(warm)
}
