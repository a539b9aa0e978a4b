//! `extends`: what a profile inherits, and where each value came from.

use ninewall::profile::Profile;

use crate::support::*;

#[test]
fn extends_unions_paths_merges_env_and_replaces_the_rest() {
    let dir = scratch_dir("merge");
    std::fs::create_dir_all(dir.join("base")).unwrap();
    std::fs::write(
        dir.join("base/runtime.toml"),
        "[mbu]\nname = \"base\"\n[exec]\nexecutables = [\"/usr/bin/python3.11\"]\ncommand = [\"/usr/bin/python3.11\"]\nenv = { A = \"1\", B = \"base\" }\n[fs]\nread = [\"/usr/lib/python3.11\"]\nlibraries = [\"/usr/lib/x86_64-linux-gnu\"]\n[net]\nmode = \"loopback\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("child.toml"),
        "extends = \"base/runtime\"\n[mbu]\nname = \"child\"\n[exec]\ncommand = [\"/usr/bin/python3.11\", \"-I\"]\nenv = { B = \"child\" }\n[fs]\nread = [\"/usr/share\"]\n",
    )
    .unwrap();
    let profile = Profile::load(&dir.join("child.toml")).unwrap();
    assert_eq!(profile.name.as_ref().unwrap().value, "child");
    let reads: Vec<(&str, usize, &str)> = profile
        .read
        .iter()
        .map(|a| (a.value.as_str(), a.origin.line, a.origin.key.as_str()))
        .collect();
    assert_eq!(
        reads,
        vec![
            ("/usr/lib/python3.11", 8, "fs.read[0]"),
            // Its index in the file that has it (child.toml's first entry),
            // not in the merged list.
            ("/usr/share", 8, "fs.read[0]")
        ]
    );
    assert!(profile.read[0].origin.file.ends_with("base/runtime.toml"));
    assert!(profile.read[1].origin.file.ends_with("child.toml"));
    let env: Vec<(&str, &str)> = profile
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(env, vec![("A", "1"), ("B", "child")]);
    let cmd: Vec<&str> = profile
        .command
        .as_ref()
        .unwrap()
        .value
        .iter()
        .map(|a| a.value.as_str())
        .collect();
    assert_eq!(cmd, vec!["/usr/bin/python3.11", "-I"]);
    assert_eq!(profile.net_mode.as_ref().unwrap().value, "loopback");
    assert_eq!(profile.files.len(), 2);
    let policy = ninewall::Policy::from_profile(&profile).unwrap();
    assert_eq!(
        policy.executables,
        vec![std::path::PathBuf::from("/usr/bin/python3.11")]
    );
}
