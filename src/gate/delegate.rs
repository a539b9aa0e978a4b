//! Delegation: an execution whose profile lists `mbu.delegate` may ask its
//! supervisor, over one inherited socket (`NINEWALL_DELEGATE_FD`), to run
//! another MBU for it. That socket is the whole channel: the sandbox cannot
//! reach the daemon or start a process outside itself any other way.
//!
//! The rule (wall 1): the child's effective policy is the intersection of its
//! profile and the parent's effective policy, and a child whose profile is not
//! a subset of the parent's is refused, naming every permission it would gain.
//! Since only subsets pass, the intersection is the child's profile itself;
//! its supervisor checks its own children against it, so a chain of any depth
//! only narrows. The depth is bounded ([`MAX_DEPTH`]): each level is a
//! supervisor process outside the sandbox's own cgroup.
//!
//! Protocol: the MBU writes one JSON request per line (`{"mbu": "reason",
//! "args": […], "stdin": "…"}`) and reads one JSON answer per line, the same
//! as the daemon's. Requests are served one at a time.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::exec::{Execution, LineReader, NextLine, WireRequest, WireResponse, MAX_REQUEST_BYTES};
use crate::policy::subset::excess;
use crate::policy::{is_mbu_name, Policy};
use crate::provenance::{AuditLog, Lineage};

/// How many delegations deep a chain may go.
pub const MAX_DEPTH: u32 = 8;

/// What a supervisor needs to serve its sandbox's delegation requests.
pub struct Delegation {
    /// The directory of the parent's profile: `NAME` is `NAME.toml` there.
    pub profiles: PathBuf,
    /// The parent's effective policy.
    pub parent: Policy,
    /// The parent's execution id.
    pub parent_exec: String,
    /// The parent's lineage (worker, role, depth).
    pub lineage: Lineage,
    /// The parent's provenance log: refusals are recorded in it, and the
    /// children's supervisors inherit it.
    pub log: AuditLog,
}

/// A child execution that passed the gate.
#[derive(Debug, Clone)]
pub struct Child {
    /// Its policy: a subset of the parent's.
    pub policy: Policy,
    /// [`crate::provenance::profile_digest`] of the profile that was checked.
    pub digest: String,
    /// The profile file.
    pub profile: PathBuf,
}

/// The child supervisor running now, if any (so the parent can end it).
pub type Current = Arc<Mutex<Option<crate::sys::ProcessHandle>>>;

impl Delegation {
    /// Serves requests on `sock` until the sandbox closes it.
    pub fn serve(mut self, sock: UnixStream, current: &Current) {
        let Ok(mut writer) = sock.try_clone() else { return };
        let mut reader = LineReader::new(sock);
        loop {
            // No deadline: the sandbox's own limits bound how long it lives.
            let answer = match reader.next_line(MAX_REQUEST_BYTES, None) {
                NextLine::Line(line) => self.answer(&line, current),
                NextLine::TooLong => {
                    // The rest of the line is not read: this channel is done.
                    let a = WireResponse::refused(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
                    let _ = writer.write_all(a.line().as_bytes());
                    return;
                }
                NextLine::End | NextLine::Incomplete | NextLine::Truncated | NextLine::Idle => return,
            };
            if writer.write_all(answer.line().as_bytes()).is_err() {
                return;
            }
        }
    }

    fn answer(&mut self, line: &[u8], current: &Current) -> WireResponse {
        let req: WireRequest = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => return WireResponse::refused(format!("not a request: {e}")),
        };
        if req.workspace.is_some() {
            return WireResponse::refused("workspace: a delegated execution gets a fresh workspace of its own");
        }
        let stdin = match req.stdin_bytes() {
            Ok(b) => b,
            Err(e) => return WireResponse::refused(e),
        };
        let child = match self.check(&req.mbu) {
            Ok(c) => c,
            Err(e) => {
                self.record_refusal(&req.mbu, &e);
                return WireResponse::refused(e);
            }
        };
        let lineage = Lineage {
            parent: Some(self.parent_exec.clone()),
            depth: self.lineage.depth + 1,
            expect_profile: Some(child.digest),
            ..self.lineage.clone()
        };
        let exec = Execution {
            profile: &child.profile,
            args: &req.args,
            stdin: &stdin,
            workspace: None,
            audit_log: &self.log,
            lineage: &lineage,
            output_cap: child.policy.limits.output,
            cgroups: None,
        };
        let started = match exec.start() {
            Ok(s) => s,
            Err(e) => return WireResponse::refused(format!("cannot start the supervisor: {e}")),
        };
        if let Ok(mut c) = current.lock() {
            *c = started.handle();
        }
        let answer = started.finish();
        if let Ok(mut c) = current.lock() {
            *c = None;
        }
        answer
    }

    /// Records a refused request under the parent's execution. The
    /// supervisor's own handle is busy with the parent's file events; the log's
    /// lock orders the two.
    fn record_refusal(&mut self, mbu: &str, why: &str) {
        let record = serde_json::json!({
            "kind": "delegate.refused",
            "exec": self.parent_exec,
            "time": crate::provenance::now_rfc3339(),
            "mbu": mbu,
            "reason": why,
        });
        if let Err(e) = self.log.append(record) {
            eprintln!("ninewall: {e}: the refused delegation to {mbu} is not recorded");
        }
    }

    /// The gate for one request: the child it may run, or why not.
    pub fn check(&self, mbu: &str) -> Result<Child, String> {
        if !is_mbu_name(mbu) || !self.parent.delegate.iter().any(|d| d == mbu) {
            return Err(format!("no such capability: {mbu}"));
        }
        if self.lineage.depth + 1 > MAX_DEPTH {
            return Err(format!("delegation deeper than {MAX_DEPTH} levels"));
        }
        let path = super::profile_path(&self.profiles, mbu);
        let profile = crate::Profile::load(&path).map_err(|e| format!("{mbu}: its profile does not load: {e}"))?;
        let policy = Policy::from_profile(&profile).map_err(|e| format!("{mbu}: its profile is not valid: {e}"))?;
        let gained = excess(&policy, &self.parent);
        if !gained.is_empty() {
            let list: Vec<String> = gained.iter().map(std::string::ToString::to_string).collect();
            return Err(format!(
                "refused: {mbu} is not a subset of {}; it would gain: {}",
                self.parent.name,
                list.join("; ")
            ));
        }
        Ok(Child {
            digest: crate::provenance::profile_digest(&profile.files),
            policy,
            profile: path,
        })
    }
}
