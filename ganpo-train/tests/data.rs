//! Dataset files: Parquet and JSONL give the same records; unreadable files are named.

use std::path::{Path, PathBuf};

use ganpo_train::data::{DataError, load_records};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

#[test]
fn parquet_and_jsonl_hold_the_same_records() {
    for name in ["standard", "conversational"] {
        let jsonl = load_records(&[data(&format!("{name}.jsonl"))], false).unwrap();
        let parquet = load_records(&[data(&format!("{name}.parquet"))], false).unwrap();
        assert!(jsonl.records.len() >= 8);
        let records = |r: &ganpo_train::data::Records| {
            r.records
                .iter()
                .map(|s| s.record.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(records(&jsonl), records(&parquet), "{name}");
        assert_eq!(parquet.records[2].line, 3);
    }
}

#[test]
fn unreadable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("broken.parquet");
    std::fs::write(&fake, b"PAR1 not really").unwrap();
    let e = load_records(std::slice::from_ref(&fake), false).unwrap_err();
    assert!(matches!(e, DataError::Parquet { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&fake.display().to_string()),
        "{e}"
    );

    let csv = dir.path().join("pairs.csv");
    std::fs::write(&csv, "prompt,chosen,rejected\n").unwrap();
    let e = load_records(std::slice::from_ref(&csv), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pairs.csv: unsupported dataset format"), "{e}");

    let missing = dir.path().join("missing.jsonl");
    let e = load_records(std::slice::from_ref(&missing), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.jsonl"), "{e}");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let e = load_records(std::slice::from_ref(&empty), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.jsonl: no valid record"), "{e}");
}
