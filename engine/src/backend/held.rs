//! A Parquet file for one row group's scan, with the column chunks the scan reads held in
//! memory, each read in one call when first asked for. The `parquet` crate reads a `File`
//! page by page, and every page costs it a duplicated descriptor, a seek, a buffered read of
//! the header and another of the page (a scan of 39.6 M events reads thousands of pages);
//! from a held chunk a page is a slice. Ranges not held (a chunk too large to hold, bytes
//! outside the chunks, or everything once [`Release`] is called) are read from the file as
//! the crate reads them.

use std::fs::File;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use parquet::errors::Result;
use parquet::file::reader::{ChunkReader, Length};

/// The largest column chunk held in memory; larger ones are read page by page.
const MAX_HELD: u64 = 64 << 20;

#[derive(Clone)]
pub(super) struct Held {
    file: Arc<File>,
    len: u64,
    /// The chunks that may be held: where each starts in the file and its length.
    ranges: Vec<(u64, u64)>,
    /// Their bytes, once read; `None` for all once released.
    held: Arc<Mutex<Option<Vec<Option<Bytes>>>>>,
}

/// Drops what a [`Held`] holds and stops it holding more (its reads go to the file): for a
/// row group whose reader waits until its turn to be read.
pub(super) struct Release(Arc<Mutex<Option<Vec<Option<Bytes>>>>>);

impl Release {
    pub(super) fn release(self) {
        *self.0.lock().expect("not poisoned") = None;
    }
}

impl Held {
    /// `file` with the byte ranges `(start, length)` to hold when asked for, those that lie
    /// within the file and are at most [`MAX_HELD`] long.
    pub(super) fn new(file: File, ranges: impl IntoIterator<Item = (u64, u64)>) -> std::io::Result<(Held, Release)> {
        let len = file.metadata()?.len();
        let ranges: Vec<(u64, u64)> =
            ranges.into_iter().filter(|&(start, n)| n > 0 && n <= MAX_HELD && start.checked_add(n).is_some_and(|end| end <= len)).collect();
        let held = Arc::new(Mutex::new(Some(vec![None; ranges.len()])));
        Ok((Held { file: Arc::new(file), len, ranges, held: held.clone() }, Release(held)))
    }

    /// The held bytes from `start` to the end of the chunk that holds them (and where that
    /// is in the file), if `length` of them are in a chunk to hold; the chunk is read now if
    /// it was not.
    fn held(&self, start: u64, length: u64) -> std::io::Result<Option<(Bytes, u64)>> {
        use std::os::unix::fs::FileExt;
        let Some(k) = self.ranges.iter().position(|&(at, n)| start >= at && start - at < n && start - at + length <= n) else {
            return Ok(None);
        };
        let (at, n) = self.ranges[k];
        let mut held = self.held.lock().expect("not poisoned");
        let Some(chunks) = held.as_mut() else { return Ok(None) };
        if chunks[k].is_none() {
            let mut bytes = vec![0u8; n as usize];
            self.file.read_exact_at(&mut bytes, at)?;
            chunks[k] = Some(Bytes::from(bytes));
        }
        let bytes = chunks[k].as_ref().expect("just read");
        Ok(Some((bytes.slice((start - at) as usize..), at + n)))
    }
}

impl Length for Held {
    fn len(&self) -> u64 {
        self.len
    }
}

/// A reader from a held range (and the file past its end) or from the file.
pub(super) enum HeldRead {
    Memory { bytes: bytes::buf::Reader<Bytes>, file: Arc<File>, end: u64 },
    File(Pread),
}

impl Read for HeldRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            HeldRead::Memory { bytes, file, end } => {
                let n = bytes.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                *self = HeldRead::File(Pread::new(file.clone(), *end));
                self.read(buf)
            }
            HeldRead::File(r) => r.read(buf),
        }
    }
}

/// A buffered reader of a shared file from an offset, by positioned reads (no descriptor
/// duplicated, no seek).
pub(super) struct Pread {
    file: Arc<File>,
    at: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Pread {
    fn new(file: Arc<File>, at: u64) -> Pread {
        Pread { file, at, buf: vec![], pos: 0 }
    }
}

impl Read for Pread {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.pos == self.buf.len() {
            self.buf.resize(8192, 0);
            let n = loop {
                match self.file.read_at(&mut self.buf, self.at) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            self.buf.truncate(n);
            self.at += n as u64;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ChunkReader for Held {
    type T = HeldRead;

    fn get_read(&self, start: u64) -> Result<HeldRead> {
        if let Some((bytes, end)) = self.held(start, 0)? {
            return Ok(HeldRead::Memory { bytes: bytes.reader(), file: self.file.clone(), end });
        }
        Ok(HeldRead::File(Pread::new(self.file.clone(), start)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        if let Some((bytes, _)) = self.held(start, length as u64)? {
            return Ok(bytes.slice(..length));
        }
        ChunkReader::get_bytes(&*self.file, start, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes are the file's, held or not: inside a held range, across its end, beyond it.
    #[test]
    fn held_ranges_read_as_the_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        std::fs::write(&path, &data).unwrap();
        let (held, release) = Held::new(File::open(&path).unwrap(), [(100, 400), (5_000, 10), (9_990, 50)]).unwrap();
        assert_eq!(held.ranges.len(), 2, "the range past the file's end is not held");
        let cases = [(100, 400), (150, 10), (450, 100), (5_000, 10), (5_005, 2), (7_000, 3), (9_990, 10)];
        let check = |held: &Held| {
            for (start, n) in cases {
                assert_eq!(held.get_bytes(start, n).unwrap(), &data[start as usize..start as usize + n], "bytes at {start}, {n}");
                let mut read = vec![0u8; n];
                held.get_read(start).unwrap().read_exact(&mut read).unwrap();
                assert_eq!(read, &data[start as usize..start as usize + n], "read at {start}, {n}");
            }
            assert!(held.get_bytes(9_995, 10).is_err(), "past the file's end");
        };
        check(&held);
        let read = |held: &Held| held.held.lock().unwrap().as_ref().map(|c| c.iter().filter(|b| b.is_some()).count());
        assert_eq!(read(&held), Some(2), "both chunks read when asked for");
        release.release();
        assert_eq!(read(&held), None);
        check(&held);
    }
}
