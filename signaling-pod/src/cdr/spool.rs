//! The disk spool of records not yet acknowledged by the CDR endpoint.
//!
//! Records are appended, one JSON line each, to numbered segment files (`<n>.jsonl`); the file
//! `cursor` holds the segment and byte offset of the first record not acknowledged. The
//! sender reads batches from the cursor and moves it past a batch only once the endpoint
//! answered 2xx; segments wholly behind the cursor are deleted. A pod that starts again
//! finds the spool as it was and sends from the cursor on: delivery is at least once (a
//! batch acknowledged just before the pod stopped, cursor not yet moved, is sent again).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// A segment is closed for appending past this size.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// A position in the spool: segment number and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

/// Records read from the spool, and where the spool stands after them.
#[derive(Debug)]
pub struct Batch {
    /// One JSON document each, without its newline.
    pub records: Vec<Vec<u8>>,
    pub end: Cursor,
}

/// The spool in its directory; shared by the writer (appends) and the sender (reads, acks).
#[derive(Debug)]
pub struct Spool {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// The segment appended to.
    write_segment: u64,
    write: Option<File>,
    write_len: u64,
    read: Cursor,
    /// Records after the cursor.
    depth: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`; appends go to a new segment.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let segments = segments(dir)?;
        let read = match std::fs::read_to_string(dir.join("cursor")) {
            Ok(text) => parse_cursor(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not `<segment> <offset>`", dir.join("cursor").display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Cursor {
                segment: segments.first().copied().unwrap_or(1),
                offset: 0,
            },
            Err(e) => return Err(e),
        };
        let last = segments.last().copied().unwrap_or(0);
        let mut depth = 0;
        for &segment in segments.iter().filter(|s| **s >= read.segment) {
            let from = if segment == read.segment {
                read.offset
            } else {
                0
            };
            depth += count_lines(&segment_path(dir, segment), from)?;
        }
        Ok(Spool {
            inner: Mutex::new(Inner {
                dir: dir.to_owned(),
                write_segment: last.max(read.segment.saturating_sub(1)) + 1,
                write: None,
                write_len: 0,
                read,
                depth,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records not yet acknowledged.
    pub fn depth(&self) -> u64 {
        self.lock().depth
    }

    /// Appends `count` records (whole lines); on failure the segment is cut back.
    pub fn append(&self, lines: &[u8], count: u64) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.write.is_some() && inner.write_len >= SEGMENT_BYTES {
            if let Some(file) = inner.write.take() {
                file.sync_data()?;
            }
            inner.write_segment += 1;
        }
        if inner.write.is_none() {
            let path = segment_path(&inner.dir, inner.write_segment);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            inner.write_len = file.metadata()?.len();
            inner.write = Some(file);
        }
        let len = inner.write_len;
        let Some(file) = inner.write.as_mut() else {
            return Ok(());
        };
        if let Err(e) = file.write_all(lines) {
            let _ = file.set_len(len);
            return Err(e);
        }
        inner.write_len += lines.len() as u64;
        inner.depth += count;
        Ok(())
    }

    /// Syncs the segment being appended to.
    pub fn sync(&self) -> io::Result<()> {
        match &self.lock().write {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    /// Up to `max` records from the cursor on (none: the spool is empty).
    pub fn read(&self, max: usize) -> io::Result<Option<Batch>> {
        let inner = self.lock();
        let mut records = Vec::new();
        let mut at = inner.read;
        while records.len() < max && at.segment <= inner.write_segment {
            let path = segment_path(&inner.dir, at.segment);
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    at = Cursor {
                        segment: at.segment + 1,
                        offset: 0,
                    };
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut reader = BufReader::new(file);
            reader.seek(SeekFrom::Start(at.offset))?;
            let mut line = Vec::new();
            let mut ended = false;
            while records.len() < max {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    // The end, or a line cut short by a stop mid-write (never acknowledged).
                    ended = true;
                    break;
                }
                at.offset += n as u64;
                line.pop();
                if !line.is_empty() {
                    records.push(line.clone());
                }
            }
            if ended {
                if at.segment == inner.write_segment {
                    break;
                }
                at = Cursor {
                    segment: at.segment + 1,
                    offset: 0,
                };
            }
        }
        Ok((!records.is_empty()).then_some(Batch { records, end: at }))
    }

    /// The endpoint acknowledged `batch`: the cursor moves past it, spent segments go.
    pub fn ack(&self, batch: &Batch) -> io::Result<()> {
        let mut inner = self.lock();
        let dir = inner.dir.clone();
        let tmp = dir.join("cursor.tmp");
        let mut file = File::create(&tmp)?;
        writeln!(file, "{} {}", batch.end.segment, batch.end.offset)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join("cursor"))?;
        inner.read = batch.end;
        inner.depth = inner.depth.saturating_sub(batch.records.len() as u64);
        for segment in segments(&dir)? {
            if segment < batch.end.segment {
                std::fs::remove_file(segment_path(&dir, segment))?;
            }
        }
        Ok(())
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:012}.jsonl"))
}

/// The segment numbers in `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn parse_cursor(text: &str) -> Option<Cursor> {
    let mut parts = text.split_whitespace();
    let cursor = Cursor {
        segment: parts.next()?.parse().ok()?,
        offset: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(cursor)
}

/// Complete lines of `path` after byte `from`.
fn count_lines(path: &Path, from: u64) -> io::Result<u64> {
    let mut reader = BufReader::new(File::open(path)?);
    reader.seek(SeekFrom::Start(from))?;
    let mut count = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(count);
        }
        if line.last() == Some(&b'\n') && line.len() > 1 {
            count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "tandem-cdr-spool-{name}-{}-{}",
            std::process::id(),
            crate::call::random_token()
        ))
    }

    fn lines(n: std::ops::Range<u32>) -> Vec<u8> {
        n.map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn texts(batch: &Batch) -> Vec<String> {
        batch
            .records
            .iter()
            .map(|r| String::from_utf8(r.clone()).unwrap())
            .collect()
    }

    #[test]
    fn records_stay_until_acknowledged_and_survive_a_restart() {
        let dir = temp_dir("restart");
        let spool = Spool::open(&dir).unwrap();
        spool.append(&lines(0..5), 5).unwrap();
        assert_eq!(spool.depth(), 5);
        let batch = spool.read(3).unwrap().unwrap();
        assert_eq!(texts(&batch), ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]);
        // Not acknowledged: read again from the same place.
        let again = spool.read(3).unwrap().unwrap();
        assert_eq!(texts(&again), texts(&batch));
        spool.ack(&batch).unwrap();
        assert_eq!(spool.depth(), 2);
        spool.sync().unwrap();
        drop(spool);

        // A new start replays what was not acknowledged, and appends after it.
        let spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.depth(), 2);
        spool.append(&lines(5..6), 1).unwrap();
        let batch = spool.read(10).unwrap().unwrap();
        assert_eq!(texts(&batch), ["{\"n\":3}", "{\"n\":4}", "{\"n\":5}"]);
        spool.ack(&batch).unwrap();
        assert_eq!(spool.depth(), 0);
        assert!(spool.read(10).unwrap().is_none());
        // The first segment, wholly acknowledged, is gone.
        assert_eq!(segments(&dir).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_cut_short_is_never_sent() {
        let dir = temp_dir("cut");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(segment_path(&dir, 1), "{\"n\":0}\n{\"n\":").unwrap();
        let spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.depth(), 1);
        spool.append(&lines(1..2), 1).unwrap();
        let batch = spool.read(10).unwrap().unwrap();
        assert_eq!(texts(&batch), ["{\"n\":0}", "{\"n\":1}"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_cursor_is_a_clear_error() {
        let dir = temp_dir("cursor");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cursor"), "garbage").unwrap();
        let error = Spool::open(&dir).unwrap_err();
        assert!(error.to_string().contains("cursor"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
