//! TensorBoard event files beside `metrics.jsonl`, so that `tensorboard --logdir runs/` shows
//! ganpo runs next to TRL runs.
//!
//! The tags are those transformers' `TensorBoardCallback` writes for TRL (`train/loss`,
//! `train/rewards/chosen`, `eval/loss`, ...: an `eval_` prefix becomes `eval/`, every other key
//! gets `train/`), at the optimizer step. A file is TFRecord framing (length, masked CRC-32C of
//! the length, data, masked CRC-32C of the data) around `Event` protocol buffers, which this
//! module encodes directly: three messages of a few fields each. A resumed run writes a new file
//! that starts with a `SessionLog` START at the first step it logs, on which TensorBoard drops
//! what the interrupted process logged from that step on. `tests/fixtures/tensorboard/expected.tfevents`,
//! written by the `tensorboard` package itself, is reproduced byte for byte in the tests.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The event-file version TensorBoard expects in a file's first event.
const FILE_VERSION: &str = "brain.Event:2";

/// Writes one run's events to `DIR/events.out.tfevents.SECONDS.HOST`.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` and a new event file in it, and writes the file-version event.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME"))
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now.as_secs(),
            std::process::id()
        ));
        let mut w = EventWriter {
            file: BufWriter::new(File::create(&path)?),
            path,
        };
        w.write(&file_version_event(wall_time()))?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks a resumed run whose first logged step is `step`: TensorBoard drops the earlier
    /// files' events from `step` on.
    pub fn start_at(&mut self, step: usize) -> std::io::Result<()> {
        self.write(&start_event(wall_time(), step as i64))
    }

    /// Writes one log line's metrics (ganpo's / TRL's keys) at `step` as scalars.
    pub fn scalars(&mut self, step: usize, metrics: &[(String, f64)]) -> std::io::Result<()> {
        let values: Vec<(String, f32)> = metrics.iter().map(|(k, v)| (tag(k), *v as f32)).collect();
        self.write(&scalars_event(wall_time(), step as i64, &values))
    }

    fn write(&mut self, event: &[u8]) -> std::io::Result<()> {
        self.file.write_all(&record(event))?;
        self.file.flush()
    }
}

/// Seconds since the epoch, as events carry them.
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// transformers' tag for a logged key: `eval_loss` is `eval/loss`, `loss` is `train/loss`.
pub fn tag(key: &str) -> String {
    match key.strip_prefix("eval_") {
        Some(rest) => format!("eval/{rest}"),
        None => format!("train/{key}"),
    }
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's masked CRC-32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// A protocol-buffer varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time = 1, step = 2 }` (a zero step is left out, as proto3 does), then `rest`.
fn event(wall_time: f64, step: i64, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![1 << 3 | 1];
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        varint(2 << 3, &mut out);
        varint(step as u64, &mut out);
    }
    out.extend_from_slice(rest);
    out
}

/// `Event { file_version = 3 }`.
fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut rest = Vec::new();
    bytes_field(3, FILE_VERSION.as_bytes(), &mut rest);
    event(wall_time, 0, &rest)
}

/// `Event { session_log = 7: SessionLog { status = 1: START (1) } }`.
fn start_event(wall_time: f64, step: i64) -> Vec<u8> {
    let mut rest = Vec::new();
    bytes_field(7, &[1 << 3, 1], &mut rest);
    event(wall_time, step, &rest)
}

/// `Event { summary = 5: Summary { value = 1: [Value { tag = 1, simple_value = 2 }] } }`.
fn scalars_event(wall_time: f64, step: i64, values: &[(String, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut value);
        value.push(2 << 3 | 5);
        value.extend_from_slice(&v.to_le_bytes());
        bytes_field(1, &value, &mut summary);
    }
    let mut rest = Vec::new();
    bytes_field(5, &summary, &mut rest);
    event(wall_time, step, &rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `tensorboard` package's own records for the same events
    /// (tools/fixtures/tensorboard_fixtures.py).
    #[test]
    fn events_equal_the_tensorboard_packages_byte_for_byte() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard");
        let want = std::fs::read(dir.join("expected.tfevents")).unwrap();
        let inputs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("values.json")).unwrap())
                .unwrap();
        let mut got = record(&file_version_event(
            inputs["file_version_wall_time"].as_f64().unwrap(),
        ));
        let start = &inputs["start"];
        got.extend(record(&start_event(
            start["wall_time"].as_f64().unwrap(),
            start["step"].as_i64().unwrap(),
        )));
        for line in inputs["lines"].as_array().unwrap() {
            let values: Vec<(String, f32)> = line["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    let x = v[1].as_f64().unwrap_or(f64::NAN);
                    (v[0].as_str().unwrap().to_string(), x as f32)
                })
                .collect();
            got.extend(record(&scalars_event(
                line["wall_time"].as_f64().unwrap(),
                line["step"].as_i64().unwrap(),
                &values,
            )));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn keys_get_transformers_tags() {
        assert_eq!(tag("loss"), "train/loss");
        assert_eq!(tag("rewards/chosen"), "train/rewards/chosen");
        assert_eq!(tag("eval_rewards/margins"), "eval/rewards/margins");
    }
}
