//! `ninewall why`: for each refusal an execution met, which wall refused it
//! and the smallest change to the profile that would allow it.
//!
//! No wall: it reads an execution's records (file records refused, refused
//! syscalls, the interpreter guard's refusals) and the host as it is now.
//! What it proposes widens the profile; `ninewall diff` against the profile
//! it must stay within says whether that is still allowed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// One kind of refusal, with what would allow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// The wall that refused: "wall 4 (filesystem view)", ...
    pub wall: &'static str,
    /// What was refused, for the first of them.
    pub what: String,
    /// How many records this stands for.
    pub count: u64,
    /// The smallest profile change that allows it, or why none is offered.
    pub fix: String,
    /// Whether `fix` is a profile change (false: nothing in a profile allows it).
    pub allowable: bool,
    /// With `--against PROFILE`: whether the profile with `fix` applied
    /// would still be within that one (what `diff` would say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<Against>,
}

/// The profile with one fix applied, compared with a named one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Against {
    /// The profile compared with.
    pub profile: String,
    /// Whether the changed profile allows nothing the named one does not.
    pub within: bool,
    /// What the fix would allow beyond it, as `diff` says it (`key: what`).
    pub gained: Vec<String>,
    /// What the profile already allows beyond it, fix or not.
    pub already: Vec<String>,
}

/// `policy` with one advice's fix applied, when the fix is a profile change
/// this can make (`fs.read += [...]`, `syscalls.allow += [...]`, ...).
pub fn apply(fix: &str, policy: &crate::Policy) -> Option<crate::Policy> {
    use crate::policy::{EntryKind, FsEntry, NetMode};
    let mut p = policy.clone();
    if fix.starts_with("net.mode = \"loopback\"") {
        p.net = NetMode::Loopback;
        return Some(p);
    }
    let (key, rest) = fix.split_once(" += [")?;
    let value: String = serde_json::Deserializer::from_str(rest)
        .into_iter::<String>()
        .next()?
        .ok()?;
    let entry = |path: &str| FsEntry {
        path: path.into(),
        kind: if Path::new(path).is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
    };
    match key {
        "fs.read" => p.read.push(entry(&value)),
        "fs.write" => p.write.push(entry(&value)),
        "exec.executables" => p.executables.push(value.into()),
        "syscalls.allow" => p.syscalls.names.push(value),
        "python.modules" => p.python.as_mut()?.modules.push(value),
        "net.allow" => p.net_allow.push(crate::policy::egress::Rule::parse(&value).ok()?),
        _ => return None,
    }
    Some(p)
}

/// Fills in each allowable advice's [`Against`]: `policy` (the
/// execution's profile) with that fix, compared with `named`.
pub fn compare(advice: &mut [Advice], policy: &crate::Policy, named: &crate::Policy, name: &str) {
    let words = |p: &crate::Policy| -> Vec<String> {
        crate::policy::subset::excess(p, named)
            .iter()
            .map(|e| format!("{}: {}", e.key, e.what))
            .collect()
    };
    let already = words(policy);
    for a in advice.iter_mut().filter(|a| a.allowable) {
        let Some(changed) = apply(&a.fix, policy) else { continue };
        let all = words(&changed);
        a.against = Some(Against {
            profile: name.to_string(),
            within: all.is_empty(),
            gained: all.into_iter().filter(|g| !already.contains(g)).collect(),
            already: already.clone(),
        });
    }
}

/// The advice for an execution's records, refusals of the same kind and
/// fix together, most frequent first. `only` keeps file refusals of that
/// path or beneath it (and drops the other kinds).
pub fn explain(records: &[Value], only: Option<&str>) -> Vec<Advice> {
    // What the start record says the filter let through by its arguments.
    let start = records
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some("exec.start"));
    let families: Vec<String> = start
        .and_then(|s| s.pointer("/walls/seccomp/socket_families"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let network = start
        .and_then(|s| s.pointer("/walls/network"))
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_string();
    let mut found: BTreeMap<(String, String), Advice> = BTreeMap::new();
    let mut add = |a: Advice| {
        found
            .entry((a.wall.to_string(), a.fix.clone()))
            .and_modify(|e| e.count += a.count)
            .or_insert(a);
    };
    for r in records {
        let text = |p: &str| r.get(p).and_then(Value::as_str).unwrap_or("").to_string();
        match r.get("kind").and_then(Value::as_str) {
            Some("file") if text("verdict") == "refused" => {
                let path = text("path");
                if only.is_some_and(|o| path != o && !path.starts_with(&format!("{}/", o.trim_end_matches('/')))) {
                    continue;
                }
                let exists = r.get("exists").and_then(Value::as_bool).unwrap_or(false);
                add(file_advice(&path, &text("access"), exists));
            }
            Some("syscall.denied") if only.is_none() => {
                let name = text("name");
                let count = r.get("count").and_then(Value::as_u64).unwrap_or(1);
                if let Some(a) = argument_refusal(&name, &families, &network, count) {
                    add(a);
                    continue;
                }
                let groups: Vec<&str> = crate::seccomp::GROUPS
                    .iter()
                    .filter(|g| g.members.contains(&name.as_str()) || g.x86_64_only.contains(&name.as_str()))
                    .map(|g| g.name)
                    .collect();
                let also = if groups.is_empty() {
                    String::new()
                } else {
                    format!(" (or a group that has it: {})", groups.join(", "))
                };
                add(Advice {
                    wall: "wall 8 (seccomp)",
                    what: format!("the syscall {name}"),
                    count: r.get("count").and_then(Value::as_u64).unwrap_or(1),
                    fix: format!("syscalls.allow += [\"{name}\"]{also}"),
                    allowable: true,
                    against: None,
                });
            }
            Some("net.connect") if only.is_none() && r.get("refused").is_some_and(|v| !v.is_null()) => {
                let host = crate::provenance::bounded_text(r.get("host").unwrap_or(&Value::Null));
                let port = r.get("port").and_then(Value::as_u64).unwrap_or(0);
                let why = text("refused");
                let fix = match why.as_str() {
                    "not in net.allow" if !host.is_empty() => {
                        let entry = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
                        format!("net.allow += [\"{entry}\"]")
                    }
                    w if w.starts_with("resolved to an internal") => format!(
                        "net.allow += [\"{host}:{port}\"] (the exact name, which may resolve to internal addresses), or the address itself"
                    ),
                    "limits.connections reached" => "limits.connections = a larger number".to_string(),
                    _ => "none: the request itself was refused (see the record)".to_string(),
                };
                add(Advice {
                    wall: "wall 6 (network, proxy)",
                    what: format!("a connection to {host}:{port} ({why})"),
                    count: 1,
                    allowable: fix.starts_with("net.allow") || fix.starts_with("limits"),
                    fix,
                    against: None,
                });
            }
            Some("guard.refused") if only.is_none() => add(guard_advice(&crate::provenance::bounded_text(
                r.get("what").unwrap_or(&Value::Null),
            ))),
            _ => {}
        }
    }
    let mut out: Vec<Advice> = found.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.wall.cmp(b.wall)));
    out
}

/// A syscall the profile allows and the filter still refused, for its
/// arguments: a socket of a family the network mode does not give, or a
/// set-id mode (which no profile allows).
fn argument_refusal(name: &str, families: &[String], network: &str, count: u64) -> Option<Advice> {
    if matches!(name, "socket" | "socketpair") && !families.is_empty() {
        let inet = families.iter().any(|f| f.starts_with("inet"));
        let fix = if inet || network != "none" {
            format!(
                "none: a socket family other than {} (no profile allows it)",
                families.join(", ")
            )
        } else {
            "net.mode = \"loopback\" (inet sockets need a network namespace with an interface; with \"none\" only unix sockets are made)".to_string()
        };
        return Some(Advice {
            wall: "wall 8 (seccomp, socket families)",
            what: format!("a socket of a family other than {}", families.join(", ")),
            count,
            fix: fix.clone(),
            allowable: fix.starts_with("net.mode"),
            against: None,
        });
    }
    crate::seccomp::guard::guard_of(name).map(|_| Advice {
        wall: "wall 8 (seccomp)",
        what: format!("the syscall {name}"),
        count,
        fix: format!(
            "syscalls.allow += [\"{name}\"] if the profile lacks it; if it has it, the call asked for a set-uid or set-gid mode, which no profile allows"
        ),
        allowable: true,
        against: None,
    })
}

/// Writing where the profile grants none is refused twice: the view binds
/// it read-only, and Landlock grants no write there.
const WRITE_WALLS: &str = "walls 4 and 7 (read-only in the view, and Landlock)";

/// A refused file access: the mount view (not in the sandbox at all) or
/// Landlock (there, but not for this), and the narrowest entry that allows
/// it: the file itself to read or execute, its directory to make or remove
/// entries in.
fn file_advice(path: &str, access: &str, exists_inside: bool) -> Advice {
    let p = Path::new(path);
    let on_host = std::fs::symlink_metadata(p).is_ok();
    let parent = p.parent().map_or("/".to_string(), |d| d.display().to_string());
    let what = format!("{access} {path}");
    if !exists_inside && !on_host {
        // Nothing there to allow: a probe for a file that does not exist
        // (loaders and interpreters look for many).
        let (dir, _) = nearest_existing(p);
        let fix = if matches!(access, "create" | "write") && dir.as_deref() == Some(parent.as_str()) {
            format!("fs.write += [{parent:?}] (to make it)")
        } else {
            "none: it does not exist on the host either (a probe for something absent)".to_string()
        };
        let allowable = fix.starts_with("fs.write");
        return Advice {
            wall: if allowable { WRITE_WALLS } else { "nothing" },
            what,
            count: 1,
            fix,
            allowable,
            against: None,
        };
    }
    let wall = match access {
        "create" | "delete" | "write" => WRITE_WALLS,
        "exec" => "wall 7 (Landlock)",
        _ if exists_inside => "wall 7 (Landlock)",
        _ => "wall 4 (filesystem view)",
    };
    let fix = match access {
        "exec" => format!("exec.executables += [{path:?}]"),
        "create" | "delete" => format!("fs.write += [{parent:?}]"),
        "write" => format!("fs.write += [{path:?}]"),
        _ => format!("fs.read += [{path:?}]"),
    };
    Advice {
        wall,
        what,
        count: 1,
        fix,
        allowable: true,
        against: None,
    }
}

/// The deepest ancestor of `p` that exists on the host, and whether `p` is.
fn nearest_existing(p: &Path) -> (Option<String>, bool) {
    let here = std::fs::symlink_metadata(p).is_ok();
    let dir = p
        .ancestors()
        .skip(1)
        .find(|d| std::fs::symlink_metadata(d).is_ok())
        .map(|d| d.display().to_string());
    (dir, here)
}

/// What the interpreter guard refused: a module the profile can allow, or
/// the language rule, which no profile changes.
fn guard_advice(what: &str) -> Advice {
    let module = what
        .strip_prefix("import of '")
        .and_then(|rest| rest.split('\'').next())
        .map(str::to_string);
    match module {
        Some(m) => match crate::interpreter::internal_module(&m) {
            Some(why) => Advice {
                wall: "wall 2 (interpreter guard)",
                what: what.to_string(),
                count: 1,
                fix: format!("none: {m} may not be allowed ({why})"),
                allowable: false,
                against: None,
            },
            None => Advice {
                wall: "wall 2 (interpreter guard)",
                what: what.to_string(),
                count: 1,
                fix: format!("python.modules += [{:?}]", m.split('.').next().unwrap_or(&m)),
                allowable: true,
                against: None,
            },
        },
        None => Advice {
            wall: "wall 2 (interpreter guard)",
            what: what.to_string(),
            count: 1,
            fix: "none: the guard's language rule, not a setting (change the code)".to_string(),
            allowable: false,
            against: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_refusal_gets_its_wall_and_the_narrowest_fix() {
        let recs = vec![
            json!({"kind": "file", "verdict": "refused", "path": "/etc/hostname", "access": "read", "exists": false}),
            json!({"kind": "file", "verdict": "refused", "path": "/etc/hostname", "access": "read", "exists": false}),
            json!({"kind": "file", "verdict": "refused", "path": "/usr/lib/python3.11/x.txt", "access": "create", "exists": false}),
            json!({"kind": "file", "verdict": "refused", "path": "/usr/bin/true", "access": "exec", "exists": true}),
            json!({"kind": "file", "verdict": "refused", "path": "/no/such/file/here", "access": "read", "exists": false}),
            json!({"kind": "file", "verdict": "allowed", "path": "/usr/lib", "access": "read", "exists": true}),
            json!({"kind": "syscall.denied", "name": "socket", "count": 3}),
            json!({"kind": "guard.refused", "what": "import of 'os'"}),
            json!({"kind": "guard.refused", "what": "import of 'gc'"}),
            json!({"kind": "guard.refused", "what": "attribute '__class__'"}),
            json!({"kind": "net.connect", "host": "api.example", "port": 443, "allowed": false, "refused": "not in net.allow"}),
            json!({"kind": "net.connect", "host": "api.example", "port": 443, "allowed": false, "refused": "not in net.allow"}),
            json!({"kind": "net.connect", "host": "fd00::1", "port": 80, "allowed": false, "refused": "not in net.allow"}),
            json!({"kind": "net.connect", "host": "api.example", "port": 443, "allowed": true, "refused": null}),
            json!({"kind": "net.connect", "host": "localhost", "port": 443, "allowed": false, "refused": "the TLS server name is not the host of the CONNECT"}),
        ];
        let a = explain(&recs, None);
        let find = |fix: &str| {
            a.iter()
                .find(|x| x.fix.starts_with(fix))
                .unwrap_or_else(|| panic!("{fix}: {a:#?}"))
        };
        assert_eq!(find("fs.read += [\"/etc/hostname\"]").count, 2);
        assert_eq!(find("fs.read += [\"/etc/hostname\"]").wall, "wall 4 (filesystem view)");
        assert_eq!(find("fs.write += [\"/usr/lib/python3.11\"]").wall, WRITE_WALLS);
        assert_eq!(
            find("exec.executables += [\"/usr/bin/true\"]").wall,
            "wall 7 (Landlock)"
        );
        assert!(find("none: it does not exist on the host")
            .what
            .contains("/no/such/file/here"));
        assert_eq!(find("syscalls.allow += [\"socket\"]").count, 3);
        assert!(
            find("syscalls.allow += [\"socket\"]").fix.contains("@network-io"),
            "{a:#?}"
        );
        assert!(find("python.modules += [\"os\"]").allowable);
        assert!(!find("none: gc may not be allowed").allowable);
        assert!(!find("none: the guard's language rule").allowable);
        assert_eq!(find("net.allow += [\"api.example:443\"]").count, 2);
        assert_eq!(
            find("net.allow += [\"api.example:443\"]").wall,
            "wall 6 (network, proxy)"
        );
        assert!(find("net.allow += [\"[fd00::1]:80\"]").allowable);
        assert!(!find("none: the request itself was refused").allowable);
        let only = explain(&recs, Some("/etc"));
        assert_eq!(only.len(), 1, "{only:#?}");
    }
}
