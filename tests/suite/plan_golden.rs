//! The setup plan is pure data: the exact mount order for a policy, and the
//! exact filesystem operations init runs, without any privilege.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ninewall::host::{Caller, Cgroups, Host, Unusable};
use ninewall::kernel::Kernel;
use ninewall::landlock::{access, Feature, PathRule};
use ninewall::plan::{IdMap, Mount, Request, Resource, Rlimit, SetupPlan};
use ninewall::policy::{EntryKind, FsEntry, Limits, NetMode, Policy, Syscalls, Workspace};
use ninewall::seccomp::OnDenied;

const KERNEL: Kernel = Kernel { landlock_abi: 7 };

/// A root-run host with v1 cgroups and the shared network namespace, or an
/// unprivileged one without either, as `Host::probe` would find them.
fn host(caller: Caller) -> Host {
    let root = caller.uid == 0;
    Host {
        kernel: KERNEL,
        caller,
        cgroups: Cgroups {
            v2: Err(Unusable::NoController {
                controller: "memory",
                parent: p("/sys/fs/cgroup/unified"),
            }),
            v1: if root {
                Ok(vec![
                    ("memory", p("/sys/fs/cgroup/memory")),
                    ("pids", p("/sys/fs/cgroup/pids")),
                    ("cpuacct", p("/sys/fs/cgroup/cpuacct")),
                ])
            } else {
                Err(Unusable::NoV1 { controller: "memory" })
            },
            lent: None,
        },
        shared_netns: root.then(|| p("/run/ninewall/net-none")),
        identity: root.then_some(0x7000_0042),
    }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn entry(path: &str, kind: EntryKind) -> FsEntry {
    FsEntry { path: p(path), kind }
}

fn policy() -> Policy {
    Policy {
        name: "golden".into(),
        description: String::new(),
        sources: vec![p("golden.toml")],
        command: Some(vec!["/usr/bin/python3.11".into(), "-I".into()]),
        executables: vec![p("/usr/bin/python3.11")],
        env: BTreeMap::from([("LANG".to_string(), "C.UTF-8".to_string())]),
        workdir: p("/work"),
        read: vec![
            entry("/usr/lib/python3.11", EntryKind::Dir),
            entry("/lib64", EntryKind::Symlink { target: p("usr/lib64") }),
            entry("/srv/kb", EntryKind::Dir),
        ],
        libraries: vec![
            entry("/usr/lib/python3.11/lib-dynload", EntryKind::Dir),
            entry("/usr/lib64", EntryKind::Dir),
        ],
        write: vec![entry("/srv/out", EntryKind::Dir)],
        library_cache: None,
        workspace: Workspace {
            path: p("/work"),
            size: 1 << 20,
        },
        tmp_size: 2 << 20,
        net: NetMode::None,
        net_connect: vec![],
        net_bind: vec![],
        net_allow: vec![],
        interpreters: vec![p("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")],
        landlock_require: Feature::ALL.to_vec(),
        syscalls: Syscalls {
            allow: vec!["@default".into()],
            names: ninewall::seccomp::expand(&["@default".into()], ninewall::seccomp::Arch::X86_64)
                .unwrap()
                .into_iter()
                .collect(),
            on_denied: OnDenied::Errno,
        },
        limits: Limits::default(),
        python: None,
        record_files: ninewall::policy::RecordFiles::All,
        records: ninewall::policy::RecordBudget::default(),
        delegate: Vec::new(),
    }
}

fn bind(path: &str, dir: bool, writable: bool, exec: bool) -> Mount {
    Mount::Bind {
        source: p(path),
        target: p(path),
        dir,
        writable,
        exec,
    }
}

#[test]
fn mounts_are_planned_parents_first_with_exact_flags() {
    let plan = SetupPlan::build(
        &policy(),
        &Request {
            args: vec!["-c".into(), "pass".into()],
            workspace_dir: None,
            ..Request::default()
        },
        &host(Caller { uid: 1234, gid: 1234 }),
    )
    .unwrap();
    assert_eq!(
        plan.mounts,
        vec![
            Mount::Symlink {
                link: p("/lib64"),
                target: p("usr/lib64")
            },
            bind("/srv/kb", true, false, false),
            bind("/srv/out", true, true, false),
            bind("/usr/bin/python3.11", false, false, true),
            bind("/usr/lib/python3.11", true, false, false),
            bind("/usr/lib/python3.11/lib-dynload", true, false, true),
            bind("/usr/lib64", true, false, true),
            Mount::Proc { target: p("/proc") },
            Mount::Dev { target: p("/dev") },
            Mount::Tmpfs {
                target: p("/tmp"),
                size: 2 << 20,
                mode: 0o1777
            },
            Mount::Tmpfs {
                target: p("/work"),
                size: 1 << 20,
                mode: 0o755
            },
        ]
    );
    assert_eq!(plan.argv, vec!["/usr/bin/python3.11", "-I", "-c", "pass"]);
    assert_eq!(plan.program, p("/usr/bin/python3.11"));
    assert_eq!(plan.env, vec![("LANG".to_string(), "C.UTF-8".to_string())]);
    assert_eq!(plan.hostname, "golden");
    assert_eq!(
        plan.ids,
        IdMap {
            inside_uid: 1000,
            inside_gid: 1000,
            host_uid: 1234,
            host_gid: 1234,
            clear_groups: false,
            own_namespace: false
        }
    );
}

#[test]
fn root_runs_as_an_identity_of_its_own_and_binds_a_workspace_idmapped_from_its_descriptor() {
    let workspace = Request {
        workspace_dir: Some(p("/var/lib/ws")),
        workspace_owner: Some((1234, 1235)),
        ..Request::default()
    };
    let plan = SetupPlan::build(&policy(), &workspace, &host(Caller { uid: 0, gid: 0 })).unwrap();
    assert_eq!(
        plan.ids,
        IdMap {
            inside_uid: 1000,
            inside_gid: 1000,
            host_uid: 0x7000_0042,
            host_gid: 0x7000_0042,
            clear_groups: true,
            own_namespace: true
        }
    );
    assert_eq!(
        plan.mounts.last(),
        Some(&Mount::Workspace {
            source: p("/var/lib/ws"),
            target: p("/work"),
            owner: (1234, 1235)
        })
    );
    // The library, as root, without an identity: nobody, and a workspace
    // bound by its path (noexec), as before identities.
    let library = Host {
        identity: None,
        ..host(Caller { uid: 0, gid: 0 })
    };
    let by_path = Request {
        workspace_dir: Some(p("/var/lib/ws")),
        ..Request::default()
    };
    let plan = SetupPlan::build(&policy(), &by_path, &library).unwrap();
    assert_eq!(
        (plan.ids.host_uid, plan.ids.host_gid, plan.ids.own_namespace),
        (65534, 65534, false)
    );
    assert_eq!(
        plan.mounts.last(),
        Some(&Mount::Bind {
            source: p("/var/lib/ws"),
            target: p("/work"),
            dir: true,
            writable: true,
            exec: false
        })
    );
}

/// A warm sandbox's plan (built with no request) given a request is the
/// plan built for that request in one go: nothing but the program, its
/// arguments and what is at the workspace depends on the request.
#[test]
fn a_warm_plan_given_a_request_is_the_plan_of_that_request() {
    let mut guarded = policy();
    guarded.python = Some(ninewall::interpreter::PythonPolicy {
        modules: vec!["json".into()],
        packages: Vec::new(),
        stdlib: p("/usr/lib/python3.11"),
    });
    for policy in [policy(), guarded] {
        for caller in [Caller { uid: 0, gid: 0 }, Caller { uid: 1000, gid: 1000 }] {
            let host = host(caller);
            let warm = SetupPlan::build(&policy, &Request::default(), &host).unwrap();
            let requests = [
                Request::default(),
                Request {
                    args: vec!["-c".into(), String::new(), "x y".into()],
                    ..Request::default()
                },
                Request {
                    args: vec!["-c".into(), "pass".into()],
                    workspace_dir: Some(p("/var/lib/ws")),
                    workspace_owner: Some((1234, 1235)),
                    ..Request::default()
                },
            ];
            for request in requests {
                assert_eq!(
                    warm.for_request(&policy, &request).unwrap(),
                    SetupPlan::build(&policy, &request, &host).unwrap(),
                    "{request:?}"
                );
            }
            let nul = Request {
                args: vec!["a\0b".into()],
                ..Request::default()
            };
            assert!(warm.for_request(&policy, &nul).is_err());
        }
    }
}

#[test]
fn init_runs_these_filesystem_operations_in_this_order() {
    let mut pol = policy();
    pol.read.truncate(2);
    pol.libraries.clear();
    pol.write.clear();
    let plan = SetupPlan::build(&pol, &Request::default(), &host(Caller { uid: 1, gid: 1 })).unwrap();
    let ops = ninewall::sandbox::mounts::compile(&plan.mounts).describe;
    let expected = [
        "make every mount private",
        "mount the staging tmpfs",
        "mkdir staging/new",
        "mkdir staging/old",
        "pivot_root into the staging tmpfs",
        "chdir /",
        "mount the new root tmpfs",
        "symlink /lib64 -> usr/lib64",
        "mkdir /usr",
        "mkdir /usr/bin",
        "create mount point /usr/bin/python3.11",
        "bind /usr/bin/python3.11 at /usr/bin/python3.11 (read-only)",
        "mkdir /usr",
        "mkdir /usr/lib",
        "mkdir /usr/lib/python3.11",
        "bind /usr/lib/python3.11 at /usr/lib/python3.11 (read-only, noexec)",
        "mkdir /proc",
        "mount a new procfs at /proc",
        "mkdir /dev",
        "mount a tmpfs at /dev",
    ];
    assert_eq!(&ops[..expected.len()], &expected[..]);
    let tail = [
        "mkdir /tmp",
        "mount a tmpfs of 2M at /tmp (noexec)",
        "mkdir /work",
        "mount a tmpfs of 1M at /work (noexec)",
        "make the new root read-only",
        "chdir to the new root",
        "pivot_root into the new root",
        "detach the old root",
        "chdir /",
    ];
    assert_eq!(&ops[ops.len() - tail.len()..], &tail[..]);
}

#[test]
fn a_program_is_chosen_only_among_the_executables() {
    let mut pol = policy();
    pol.command = None;
    let caller = Caller { uid: 1, gid: 1 };
    let build = |args: &[&str]| {
        SetupPlan::build(
            &pol,
            &Request {
                args: args.iter().map(std::string::ToString::to_string).collect(),
                workspace_dir: None,
                ..Request::default()
            },
            &host(caller),
        )
    };
    assert_eq!(build(&["python3.11", "-V"]).unwrap().program, p("/usr/bin/python3.11"));
    assert_eq!(
        build(&["/usr/bin/python3.11"]).unwrap().argv,
        vec!["/usr/bin/python3.11"]
    );
    assert!(build(&["/bin/sh"]).unwrap_err().is_exec_refusal());
    assert!(build(&["../python3.11"]).unwrap_err().is_exec_refusal());
    assert!(!build(&[]).unwrap_err().is_exec_refusal());
}

#[test]
fn the_landlock_ruleset_grants_execute_only_on_the_executable_and_its_interpreter() {
    let plan = SetupPlan::build(&policy(), &Request::default(), &host(Caller { uid: 1, gid: 1 })).unwrap();
    let ll = plan.landlock.unwrap();
    assert_eq!(ll.abi, 7);
    assert_eq!(ll.handled_fs, (1 << 16) - 1);
    assert_eq!(ll.scoped, access::SCOPE_SIGNAL | access::SCOPE_ABSTRACT_UNIX_SOCKET);
    let exec: Vec<&PathRule> = ll.paths.iter().filter(|r| r.access & access::EXECUTE != 0).collect();
    assert_eq!(
        exec.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
        vec![
            p("/usr/bin/python3.11"),
            p("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        ]
    );
    let rights = |path: &str| ll.paths.iter().find(|r| r.path == p(path)).map(|r| r.access);
    let read = access::READ_FILE | access::READ_DIR;
    assert_eq!(rights("/usr/lib/python3.11"), Some(read));
    assert_eq!(rights("/srv/kb"), Some(read));
    assert_eq!(rights("/usr/lib64"), Some(read), "libraries are read, not execute");
    assert_eq!(rights("/proc"), Some(read));
    assert_eq!(rights("/dev"), Some(access::READ_DIR));
    assert!(rights("/lib64").is_none(), "a symlink gets no rule");
    for w in ["/srv/out", "/work", "/tmp"] {
        let r = rights(w).unwrap();
        assert_eq!(r & access::EXECUTE, 0);
        assert_ne!(r & access::WRITE_FILE, 0);
        assert_eq!(r & (access::MAKE_CHAR | access::MAKE_BLOCK | access::IOCTL_DEV), 0);
    }
    assert!(ll.ports.is_empty(), "no TCP port unless the profile lists it");
}

#[test]
fn a_kernel_without_a_required_landlock_feature_gets_no_plan() {
    let old = Kernel { landlock_abi: 3 };
    let err = SetupPlan::build(
        &policy(),
        &Request::default(),
        &Host {
            kernel: old,
            ..host(Caller { uid: 1, gid: 1 })
        },
    )
    .unwrap_err();
    assert!(err.is_wall_refusal());
    // A wall that cannot be built: 125, as for every other (not 2, bad input).
    assert_eq!(ninewall::error::Error::from(err.clone()).exit_code(), 125);
    assert_eq!(
        err.to_string(),
        "wall 7 (Landlock): the profile requires tcp (Landlock ABI 4), and this kernel's Landlock ABI is 3; a profile can accept less with landlock.require (the walls actually built are listed by -v)"
    );
    let mut lenient = policy();
    lenient.landlock_require = vec![Feature::Fs];
    let plan = SetupPlan::build(
        &lenient,
        &Request::default(),
        &Host {
            kernel: old,
            ..host(Caller { uid: 1, gid: 1 })
        },
    )
    .unwrap();
    assert_eq!(plan.landlock.unwrap().handled_net, 0);
    lenient.landlock_require.clear();
    let none = Kernel { landlock_abi: 0 };
    assert!(SetupPlan::build(
        &lenient,
        &Request::default(),
        &Host {
            kernel: none,
            ..host(Caller { uid: 1, gid: 1 })
        }
    )
    .unwrap()
    .landlock
    .is_none());
}

#[test]
fn the_rlimits_are_planned_for_both_ways_wall_9_may_be_built() {
    let mut pol = policy();
    pol.limits = Limits {
        memory: 256 << 20,
        pids: 32,
        cpu_seconds: 10,
        file_size: 8 << 20,
        open_files: 64,
        ..Limits::default()
    };
    let plan = SetupPlan::build(&pol, &Request::default(), &host(Caller { uid: 1, gid: 1 })).unwrap();
    let limit = |resource, soft, hard| Rlimit { resource, soft, hard };
    // Alone, the rlimits are the limits; the 2 helpers (outer child, init)
    // count as processes of the sandbox's user.
    assert_eq!(
        plan.rlimits.alone,
        vec![
            limit(Resource::Data, 256 << 20, 256 << 20),
            limit(Resource::Nproc, 34, 34),
            limit(Resource::Cpu, 10, 11),
            limit(Resource::Fsize, 8 << 20, 8 << 20),
            limit(Resource::Nofile, 64, 64),
            limit(Resource::Core, 0, 0),
        ]
    );
    // Beside a cgroup, data and processes are twice its limits, so that the
    // cgroup is the one that fires (and says so).
    assert_eq!(
        &plan.rlimits.in_cgroup[..2],
        &[
            limit(Resource::Data, 512 << 20, 512 << 20),
            limit(Resource::Nproc, 66, 66)
        ]
    );
    assert_eq!(&plan.rlimits.in_cgroup[2..], &plan.rlimits.alone[2..]);
}

#[test]
fn the_cgroup_hierarchy_is_the_hosts_and_only_a_socketless_root_run_shares_the_empty_netns() {
    let root = host(Caller { uid: 0, gid: 0 });
    let build = |pol: &Policy, host: &Host| SetupPlan::build(pol, &Request::default(), host).unwrap();
    let no_sockets = {
        let mut pol = policy();
        pol.syscalls.names.retain(|n| n != "socket" && n != "socketpair");
        pol
    };
    let plan = build(&no_sockets, &root);
    assert_eq!(
        plan.cgroups, root.cgroups,
        "v2 unusable, v1 beneath the supervisor's own"
    );
    assert_eq!(plan.shared_netns, Some(p("/run/ninewall/net-none")));

    let mut sockets = no_sockets.clone();
    sockets.syscalls.names.push("socketpair".into());
    assert_eq!(
        build(&sockets, &root).shared_netns,
        None,
        "a socket needs a namespace of its own"
    );
    let mut loopback = no_sockets.clone();
    loopback.net = NetMode::Loopback;
    assert_eq!(
        build(&loopback, &root).shared_netns,
        None,
        "loopback is the sandbox's own"
    );
    let unprivileged = host(Caller { uid: 1, gid: 1 });
    let plan = build(&no_sockets, &unprivileged);
    assert_eq!(plan.shared_netns, None, "only root may share");
    assert_eq!(plan.cgroups, unprivileged.cgroups);
}
