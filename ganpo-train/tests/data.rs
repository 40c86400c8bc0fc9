//! Dataset files: Parquet, JSONL and gzip-compressed JSONL give the same records; unreadable
//! files are named. Parquet needs the library's `parquet` feature (the binary has it, and so has
//! `cargo test --workspace`, which unifies features); without it a `.parquet` file is refused by
//! name, and so is an `hf://datasets/` download without `hub`.

use std::path::{Path, PathBuf};

use ganpo_train::data::{DataError, load_records};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

#[cfg(feature = "parquet")]
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
fn gzip_compressed_jsonl_reads_as_the_plain_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let plain = data("standard.jsonl");
    let text = std::fs::read(&plain).unwrap();
    // Two gzip members, as `cat a.gz b.gz` makes: both halves are read.
    let split = text.len() / 2
        + text[text.len() / 2..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap()
        + 1;
    let mut bytes = Vec::new();
    for part in [&text[..split], &text[split..]] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(part).unwrap();
        bytes.extend(gz.finish().unwrap());
    }
    let packed = dir.path().join("standard.jsonl.gz");
    std::fs::write(&packed, &bytes).unwrap();
    let a = load_records(&[plain], false).unwrap();
    let b = load_records(std::slice::from_ref(&packed), false).unwrap();
    assert_eq!(a.records.len(), b.records.len());
    for (x, y) in a.records.iter().zip(&b.records) {
        assert_eq!((&x.record, x.line), (&y.record, y.line));
    }

    // Not gzip inside: an error naming the file, not a panic.
    let fake = dir.path().join("fake.jsonl.gz");
    std::fs::write(&fake, b"{\"prompt\": 1}\n").unwrap();
    let e = load_records(std::slice::from_ref(&fake), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fake.jsonl.gz"), "{e}");
    // A compressed Parquet file is not a format.
    let pq = dir.path().join("x.parquet.gz");
    std::fs::write(&pq, &bytes).unwrap();
    let e = load_records(std::slice::from_ref(&pq), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported dataset format"), "{e}");
}

#[test]
fn unreadable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(feature = "parquet")]
    {
        let fake = dir.path().join("broken.parquet");
        std::fs::write(&fake, b"PAR1 not really").unwrap();
        let e = load_records(std::slice::from_ref(&fake), false).unwrap_err();
        assert!(matches!(e, DataError::Parquet { .. }), "{e}");
        assert!(
            e.to_string().starts_with(&fake.display().to_string()),
            "{e}"
        );
    }

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

#[cfg(not(feature = "parquet"))]
#[test]
fn parquet_without_the_feature_is_refused_by_name() {
    let path = data("standard.parquet");
    let e = load_records(std::slice::from_ref(&path), false).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::FeatureDisabled {
                feature: "parquet",
                ..
            }
        ),
        "{e}"
    );
    let e = e.to_string();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(e.contains("`parquet` feature"), "{e}");
}

#[cfg(not(feature = "hub"))]
#[test]
fn hub_downloads_without_the_feature_are_refused_by_name() {
    let uri = PathBuf::from("hf://datasets/trl-lib/ultrafeedback_binarized/train");
    // Not cached here, so it would need a download, which this build cannot make.
    let e = load_records(&[uri], false).unwrap_err().to_string();
    assert!(
        e.contains("trl-lib/ultrafeedback_binarized")
            && e.contains("needs ganpo-train's `hub` feature"),
        "{e}"
    );
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let plain = data("standard.jsonl");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend(std::fs::read(&plain).unwrap());
    let marked = dir.path().join("bom.jsonl");
    std::fs::write(&marked, bytes).unwrap();
    let a = load_records(&[plain], false).unwrap();
    let b = load_records(std::slice::from_ref(&marked), false).unwrap();
    assert_eq!(a.records.len(), b.records.len());
    assert_eq!(a.records[0].record, b.records[0].record);
}

#[test]
fn unpaired_rows_are_checked_and_never_mixed_with_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let good = r#"{"prompt": "Q", "completion": " yes", "label": true}"#;
    let bad_label = write(
        "bad.jsonl",
        &format!(
            "{good}\n{}\n",
            r#"{"prompt": "Q", "completion": " no", "label": "false"}"#
        ),
    );
    let e = load_records(&[bad_label], false).unwrap_err().to_string();
    assert!(
        e.contains(
            "bad.jsonl:2: field `label`: expected a boolean (true = desirable), got a string"
        ),
        "{e}"
    );
    let no_label = write("nolabel.jsonl", r#"{"prompt": "Q", "completion": " no"}"#);
    let e = load_records(&[no_label], false).unwrap_err().to_string();
    assert!(e.contains("nolabel.jsonl:1: field `label`: missing"), "{e}");
    let both = write(
        "both.jsonl",
        r#"{"prompt": "Q", "chosen": " a", "rejected": " b", "completion": " c", "label": true}"#,
    );
    let e = load_records(&[both], false).unwrap_err().to_string();
    assert!(
        e.contains("both.jsonl:1: field `chosen`: a row is either a pair"),
        "{e}"
    );
    // Pairs in one file, unpaired examples in another (or the same): refused, naming both.
    let pairs = write(
        "pairs.jsonl",
        r#"{"prompt": "Q", "chosen": " a", "rejected": " b"}"#,
    );
    let unpaired = write("unpaired.jsonl", &format!("{good}\n"));
    let e = load_records(&[pairs, unpaired.clone()], false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mixes pairs (")
            && e.contains("pairs.jsonl:1")
            && e.contains("unpaired.jsonl:1"),
        "{e}"
    );
    let records = load_records(&[unpaired], false).unwrap();
    assert_eq!((records.records.len(), records.unpaired.len()), (0, 1));
}

#[test]
fn pairs_split_into_unpaired_rows_as_trl_orders_them() {
    let records = load_records(&[data("standard.jsonl")], false).unwrap();
    let n = records.records.len();
    let rows = records.as_unpaired();
    assert_eq!(rows.len(), 2 * n);
    // One block (fewer than 1,000 pairs): every chosen completion, then every rejected one.
    for (i, r) in records.records.iter().enumerate() {
        assert_eq!(rows[i].record.completion, r.record.chosen);
        assert_eq!(rows[n + i].record.completion, r.record.rejected);
        assert!(rows[i].record.label && !rows[n + i].record.label);
        assert_eq!((rows[i].line, rows[n + i].line), (r.line, r.line));
    }
}
