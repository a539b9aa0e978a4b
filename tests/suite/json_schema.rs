//! Every `--json` output matches its published schema
//! (`clients/schema/*.json`), checked on real runs of the binary.

use serde_json::Value;

use crate::support::*;

fn json_of(args: &[&str]) -> (Run, Value) {
    let r = Run::from_output(ninewall(Who::Root).args(args).output().unwrap());
    let v = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {r:#?}"));
    (r, v)
}

#[test]
fn every_json_output_matches_its_schema() {
    let dir = scratch_dir("schema");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let log = dir.join("audit.jsonl");
    let log_s = log.to_str().unwrap();
    let reason = profile("reason");
    let reason_s = reason.to_str().unwrap();

    // run --json: the outcome on the last line of stderr, and the records
    // it wrote (file refusals among them).
    let r = run(
        Who::Root,
        &reason,
        &["--json", "--audit-log", log_s],
        &[
            "-c",
            "import os\ntry:\n    open('/etc/hostname')\nexcept OSError:\n    pass",
        ],
        None,
    );
    r.assert_code(0);
    let outcome: Value = serde_json::from_str(r.stderr.lines().last().unwrap_or("")).unwrap();
    assert_schema("outcome", &outcome);
    let exec = outcome["exec"].as_str().unwrap().to_string();

    // A proxied run adds net.connect records; a refused syscall adds one too.
    let proxied = write_profile(
        "schema-proxy",
        "extends = \"base/python\"\n[mbu]\nname = \"schema-proxy\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\", \"-S\", \"-B\"]\n\
         [net]\nmode = \"proxy\"\nallow = [\"localhost:9\"]\n[syscalls]\nallow = [\"@default\", \"@network-io\"]\n",
    );
    let r = run(
        Who::Root,
        &proxied,
        &["--audit-log", log_s],
        &[
            "-c",
            "import socket\ns = socket.create_connection(('127.0.0.1', 3128))\ns.sendall(b'CONNECT elsewhere.example:443 HTTP/1.1\\r\\n\\r\\n')\nprint(s.recv(100).split(b' ')[1].decode())",
        ],
        None,
    );
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "403");

    // One array of records per execution.
    let r = Run::from_output(
        ninewall(Who::Root)
            .args(["audit", "show", "--json", log_s])
            .output()
            .unwrap(),
    );
    r.assert_code(0);
    let shown: Vec<Value> = serde_json::Deserializer::from_str(&r.stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(shown.len(), 2, "one array per execution");
    for execution in &shown {
        assert_schema("show", execution);
    }
    let kinds: std::collections::BTreeSet<&str> = shown
        .iter()
        .flat_map(|e| e.as_array().unwrap())
        .filter_map(|r| r["kind"].as_str())
        .collect();
    for k in ["exec.start", "exec.end", "file", "net.connect"] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    // Every line of the log itself, too.
    for record in log_records(&log) {
        assert_schema("record", &record);
    }

    let (_, why) = json_of(&["why", "--json", "--log", log_s, &exec]);
    assert!(!why.as_array().unwrap().is_empty(), "{why}");
    assert_schema("why", &why);

    let (_, verified) = json_of(&["audit", "verify", "--json", log_s]);
    assert_eq!(verified["ok"], true);
    assert!(
        verified["unsealed"]
            .as_str()
            .is_some_and(|u| u.contains("neither an edit of the last")),
        "{verified}"
    );
    assert_schema("verify", &verified);
    let not_a_log = dir.join("not-a-log");
    std::fs::write(&not_a_log, "hello\n").unwrap();
    let (_, refused) = json_of(&["audit", "verify", "--json", not_a_log.to_str().unwrap()]);
    assert_eq!(refused["ok"], false);
    assert_schema("verify", &refused);

    let (_, checked) = json_of(&["check", "--json", reason_s]);
    assert_schema("check", &checked);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[mbu]\nname = 3\n").unwrap();
    let (_, problems) = json_of(&["check", "--json", bad.to_str().unwrap()]);
    assert_eq!(problems["ok"], false);
    assert_schema("check", &problems);
    let (_, several) = json_of(&[
        "check",
        "--json",
        reason_s,
        bad.to_str().unwrap(),
        proxied.to_str().unwrap(),
    ]);
    assert_eq!(several.as_array().map(Vec::len), Some(3), "{several}");
    assert_schema("check", &several);

    let (_, diff) = json_of(&[
        "diff",
        "--json",
        profile("code_generate_new").to_str().unwrap(),
        reason_s,
    ]);
    assert_schema("diff", &diff);

    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "profiles = {:?}\n[roles.analyst]\nmbus = [\"reason\"]\n[workers.boss]\nuser = \"root\"\nroles = [\"analyst\"]\n\
             [warm]\nreason = 2\n",
            stage().profiles.display().to_string()
        ),
    )
    .unwrap();
    let (_, roles) = json_of(&["policy", "--json", policy.to_str().unwrap()]);
    assert_eq!(roles["warm"], serde_json::json!({"reason": 2}));
    assert_schema("policy", &roles);

    let (_, probe) = json_of(&["probe", "--json"]);
    assert_schema("probe", &probe);
}

/// The check is not vacuous: a wrong type, a missing field, an unknown
/// record kind each fail.
#[test]
fn a_value_that_breaks_its_schema_is_caught() {
    use serde_json::json;
    for (name, bad) in [
        (
            "outcome",
            json!({"exec": null, "exit_code": "0", "limit": null, "messages": []}),
        ),
        ("outcome", json!({"exec": null, "limit": null, "messages": []})),
        ("record", json!({"kind": "net.connect", "time": "t", "exec": "e"})),
        ("record", json!({"kind": "no.such.kind", "time": "t"})),
        (
            "diff",
            json!({"a": "x", "b": "y", "subset": true, "gained": [{"key": 1, "what": "w"}]}),
        ),
        ("check", json!({"ok": false, "profile": "p"})),
    ] {
        let caught = std::panic::catch_unwind(|| assert_schema(name, &bad));
        assert!(caught.is_err(), "{name}.json accepted {bad}");
    }
}
