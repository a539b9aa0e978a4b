//! Each shipped profile does its job, and nothing more.

use crate::support::*;

#[test]
fn every_shipped_profile_checks() {
    let dir = source_profiles();
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            if path.ends_with("knowledge.toml")
                && !std::path::Path::new("/srv/knowledge").exists()
                && skip("/srv/knowledge is missing")
            {
                continue;
            }
            let r = check_profile(&path, false);
            assert_eq!(r.code, 0, "{}: {}", path.display(), r.stderr);
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

#[test]
fn reason_computes_and_sees_nothing_else() {
    for who in identities() {
        let r = python(
            who,
            &profile("reason"),
            "import statistics, json, os; print(json.dumps({'mean': statistics.mean([1, 2, 3, 4]), 'work': os.listdir('/work'), 'srv': os.path.exists('/srv')}))",
        );
        r.assert_code(0);
        assert_eq!(r.json(), serde_json::json!({"mean": 2.5, "work": [], "srv": false}));
    }
}

#[test]
fn knowledge_reads_the_knowledge_directory_and_writes_nothing() {
    if !std::path::Path::new("/srv/knowledge/README.txt").exists() && skip("/srv/knowledge/README.txt is missing") {
        return;
    }
    for who in identities() {
        let r = python(
            who,
            &profile("knowledge"),
            "import os; d = os.environ['KNOWLEDGE_DIR']; print(sorted(os.listdir(d))[:1], open(d + '/README.txt').read().strip())",
        );
        r.assert_code(0);
        assert_eq!(
            r.stdout.trim(),
            format!(
                "['README.txt'] {}",
                std::fs::read_to_string("/srv/knowledge/README.txt").unwrap().trim()
            )
        );
    }
}

#[test]
fn document_generation_writes_into_the_workspace_only() {
    for who in identities() {
        let dir = scratch_dir("docs");
        std::os::unix::fs::chown(&dir, Some(who.workspace_owner().0), Some(who.workspace_owner().1)).unwrap();
        let r = run(
            who,
            &profile("document_generation"),
            &["--workspace", dir.to_str().unwrap()],
            &[
                "-c",
                "import csv, errno\nwith open('report.csv', 'w', newline='') as f: csv.writer(f).writerows([['q', 'revenue'], ['Q1', 10]])\ntry:\n    open('/usr/lib/python3.11/report.csv', 'w')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
            ],
            None,
        );
        r.assert_code(0);
        assert_eq!(r.stdout.trim(), "EROFS");
        assert_eq!(
            std::fs::read_to_string(dir.join("report.csv")).unwrap(),
            "q,revenue\r\nQ1,10\r\n"
        );
    }
}
