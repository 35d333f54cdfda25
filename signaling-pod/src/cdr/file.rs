//! The record files: JSON lines, rotated by size and age.
//!
//! The file being written is `cdr-<UTC time opened>-<n>.jsonl.part`; rotation syncs it and
//! renames it to `….jsonl`, so a collector takes only complete `.jsonl` files. A `.part` file
//! left by a pod that stopped abruptly is completed when the directory is opened again: a
//! partly written last line is cut off and the file renamed.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// When the file being written is closed and the next one started.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// Once a file holds this many bytes (0: no size limit).
    pub max_bytes: u64,
    /// Once a file is this old, even with nothing new written (None: no age limit).
    pub max_age: Option<Duration>,
}

/// The record file being written, in its directory.
#[derive(Debug)]
pub struct RecordFile {
    dir: PathBuf,
    rotation: Rotation,
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    file: File,
    part: PathBuf,
    len: u64,
    opened: Instant,
}

const PART: &str = ".part";

impl RecordFile {
    /// Writes into `dir` (which exists), first completing `.part` files left there.
    pub fn open(dir: &Path, rotation: Rotation) -> io::Result<RecordFile> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with("cdr-") && name.ends_with(PART) {
                let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
                cut_partial_line(&mut file)?;
                file.sync_all()?;
                std::fs::rename(&path, complete_name(&path))?;
                tracing::info!(file = %path.display(), "completed a record file left open");
            }
        }
        Ok(RecordFile {
            dir: dir.to_owned(),
            rotation,
            current: None,
        })
    }

    /// Appends whole lines; on failure the file is cut back to where it was.
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.current.is_none() {
            self.current = Some(self.create()?);
        }
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if let Err(e) = current.file.write_all(lines) {
            let _ = current.file.set_len(current.len);
            let _ = current.file.seek(SeekFrom::Start(current.len));
            return Err(e);
        }
        current.len += lines.len() as u64;
        Ok(())
    }

    /// Syncs what was written to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.current {
            Some(current) => current.file.sync_data(),
            None => Ok(()),
        }
    }

    /// Closes the file when it is as large or as old as the rotation allows.
    pub fn rotate_if_due(&mut self) -> io::Result<()> {
        let due = self.current.as_ref().is_some_and(|c| {
            (self.rotation.max_bytes > 0 && c.len >= self.rotation.max_bytes)
                || self
                    .rotation
                    .max_age
                    .is_some_and(|age| c.opened.elapsed() >= age)
        });
        if due { self.close() } else { Ok(()) }
    }

    /// Syncs the file and renames it complete; the next record opens a new one.
    pub fn close(&mut self) -> io::Result<()> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        current.file.sync_all()?;
        std::fs::rename(&current.part, complete_name(&current.part))
    }

    fn create(&self) -> io::Result<Current> {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        for n in 0.. {
            let part = self.dir.join(format!("cdr-{stamp}-{n}.jsonl{PART}"));
            if part.exists() || complete_name(&part).exists() {
                continue;
            }
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&part)?;
            return Ok(Current {
                file,
                part,
                len: 0,
                opened: Instant::now(),
            });
        }
        unreachable!("an unused file name exists")
    }
}

/// `x.jsonl.part` → `x.jsonl`.
fn complete_name(part: &Path) -> PathBuf {
    let name = part.to_string_lossy();
    PathBuf::from(name.strip_suffix(PART).unwrap_or(&name).to_owned())
}

/// Cuts a file after its last newline (a line whose write was interrupted).
pub(crate) fn cut_partial_line(file: &mut File) -> io::Result<u64> {
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut data)?;
    let keep = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) as u64;
    if keep < data.len() as u64 {
        file.set_len(keep)?;
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tandem-cdr-file-{name}-{}-{}",
            std::process::id(),
            crate::call::random_token()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotates_by_size_and_completes_files() {
        let dir = temp_dir("size");
        let rotation = Rotation {
            max_bytes: 16,
            max_age: None,
        };
        let mut file = RecordFile::open(&dir, rotation).unwrap();
        for line in ["{\"n\":1}\n", "{\"n\":2}\n", "{\"n\":3}\n"] {
            file.append(line.as_bytes()).unwrap();
            file.rotate_if_due().unwrap();
        }
        file.close().unwrap();
        let names = files(&dir);
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".jsonl")), "{names:?}");
        let text: String = names
            .iter()
            .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
            .collect();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotates_by_age() {
        let dir = temp_dir("age");
        let rotation = Rotation {
            max_bytes: 0,
            max_age: Some(Duration::ZERO),
        };
        let mut file = RecordFile::open(&dir, rotation).unwrap();
        file.append(b"{}\n").unwrap();
        file.rotate_if_due().unwrap();
        assert!(files(&dir)[0].ends_with(".jsonl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_left_open_is_completed_without_its_partial_line() {
        let dir = temp_dir("left");
        std::fs::write(
            dir.join("cdr-20261203T120000Z-0.jsonl.part"),
            "{\"n\":1}\n{\"n\":",
        )
        .unwrap();
        let rotation = Rotation {
            max_bytes: 0,
            max_age: None,
        };
        RecordFile::open(&dir, rotation).unwrap();
        assert_eq!(files(&dir), ["cdr-20261203T120000Z-0.jsonl"]);
        let text = std::fs::read_to_string(dir.join("cdr-20261203T120000Z-0.jsonl")).unwrap();
        assert_eq!(text, "{\"n\":1}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
