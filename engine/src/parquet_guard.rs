//! A check of a Parquet file's schema before the `parquet` crate reads it: the crate builds
//! the schema tree recursively, one stack frame per level, so a footer that nests groups a
//! million deep (8 MB of footer is enough) overflows any stack. quarry's tables are flat, so
//! a schema nested deeper than [`MAX_DEPTH`] is refused with a message instead.
//!
//! The footer is Thrift's compact protocol: `FileMetaData` field 2 is the schema, a flat list
//! of `SchemaElement`s in depth-first order, each with its number of children (field 5).
//! Only that list is read, iteratively; every other field is skipped (nested at most
//! [`MAX_SKIP`] deep, as the crate's own reader does).

use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many [`contain`] calls are running: while any is, a panic is expected to be turned
/// into a message, and the binary's panic hook stays quiet.
pub static CONTAINED: AtomicUsize = AtomicUsize::new(0);

/// Runs a reader of untrusted bytes (the `parquet` and `arrow` crates), turning a panic in it
/// into an error: they panic on some malformed files instead of returning an error (an
/// out-of-bounds bit offset in a data page, found by fuzzing). `what` names the file.
pub fn contain<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    CONTAINED.fetch_add(1, Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.fetch_sub(1, Ordering::SeqCst);
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(format!("{what}: not a readable file: the reader failed on it ({message})"))
    })
}

/// The deepest schema accepted (a flat table is 1: the root and its columns).
pub const MAX_DEPTH: usize = 32;

/// How deep skipped Thrift values may nest.
const MAX_SKIP: usize = 64;

/// Refuses a Parquet file whose schema is nested deeper than [`MAX_DEPTH`] or whose footer is
/// not a Parquet footer; the file is left at an unspecified position.
pub fn check(file: &mut (impl Read + Seek)) -> Result<(), String> {
    let len = file.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    if len < 12 {
        return Err(format!("not a Parquet file: {len} bytes"));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8)).map_err(|e| e.to_string())?;
    file.read_exact(&mut tail).map_err(|e| e.to_string())?;
    if &tail[4..] != b"PAR1" {
        // Encrypted footers ("PARE") and anything else: the crate says what it is.
        return Ok(());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer_len + 8 > len {
        return Err(format!("not a Parquet file: a footer of {footer_len} bytes in a file of {len}"));
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::End(-8 - footer_len as i64)).map_err(|e| e.to_string())?;
    file.read_exact(&mut footer).map_err(|e| e.to_string())?;
    let children = schema_children(&footer).map_err(|e| format!("not a readable Parquet footer: {e}"))?;
    let depth = depth(&children);
    if depth > MAX_DEPTH {
        return Err(format!(
            "its schema is nested {depth} levels deep; quarry reads flat tables (at most {MAX_DEPTH} levels), one column per value"
        ));
    }
    Ok(())
}

/// How deep the tree given by its elements' child counts (depth-first) goes.
fn depth(children: &[i32]) -> usize {
    // The children still to come of each open group.
    let mut open: Vec<i64> = vec![];
    let mut deepest = 0;
    for &n in children {
        if let Some(left) = open.last_mut() {
            *left -= 1;
        }
        if n > 0 {
            open.push(i64::from(n));
            deepest = deepest.max(open.len());
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    deepest
}

/// Each schema element's `num_children` (0 when absent), in order.
fn schema_children(footer: &[u8]) -> Result<Vec<i32>, String> {
    let mut r = Reader { bytes: footer, at: 0 };
    let mut id = 0i16;
    loop {
        let Some((field, kind)) = r.field_header(&mut id)? else { return Ok(vec![]) };
        if field == 2 && kind == LIST {
            let (count, element) = r.list_header()?;
            if element != STRUCT {
                return Err("the schema is not a list of structs".into());
            }
            let mut children = Vec::with_capacity(count.min(1 << 20));
            for _ in 0..count {
                let mut num_children = 0;
                let mut id = 0i16;
                while let Some((field, kind)) = r.field_header(&mut id)? {
                    if field == 5 && kind == I32 {
                        num_children = i32::try_from(r.zigzag()?).map_err(|_| "num_children out of range")?;
                    } else {
                        r.skip(kind, 0)?;
                    }
                }
                children.push(num_children);
            }
            return Ok(children);
        }
        r.skip(kind, 0)?;
    }
}

const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or("it ends early")?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<(), String> {
        let end = usize::try_from(n).ok().and_then(|n| self.at.checked_add(n)).filter(|e| *e <= self.bytes.len());
        self.at = end.ok_or("it ends early")?;
        Ok(())
    }

    /// A ULEB128 varint, read as the `parquet` crate reads it (any length, bits past 64
    /// wrapped), so that the guard sees the values the crate will.
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).wrapping_shl(shift);
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift = shift.wrapping_add(7);
        }
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A Thrift `i32`, truncated from its varint as the `parquet` crate does.
    fn i32(&mut self) -> Result<i64, String> {
        Ok(i64::from(self.zigzag()? as i32))
    }

    /// The next field's id and type, or `None` at the struct's end.
    fn field_header(&mut self, id: &mut i16) -> Result<Option<(i16, u8)>, String> {
        let b = self.byte()?;
        let kind = b & 0x0f;
        if kind == 0 {
            return Ok(None);
        }
        let delta = i16::from(b >> 4);
        *id = if delta == 0 { i16::try_from(self.zigzag()?).map_err(|_| "a field id out of range")? } else { id.wrapping_add(delta) };
        Ok(Some((*id, kind)))
    }

    fn list_header(&mut self) -> Result<(usize, u8), String> {
        let b = self.byte()?;
        let count = match b >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        // Every element takes at least one byte.
        if count > (self.bytes.len() - self.at) as u64 {
            return Err(format!("a list of {count} elements in {} bytes", self.bytes.len()));
        }
        Ok((count as usize, b & 0x0f))
    }

    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if depth > MAX_SKIP {
            return Err(format!("values nested more than {MAX_SKIP} deep"));
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.take(1),
            I16 | I32 | I64 => self.varint().map(|_| ()),
            DOUBLE => self.take(8),
            UUID => self.take(16),
            BINARY => {
                let n = self.varint()?;
                self.take(n)
            }
            LIST | SET => {
                let (count, element) = self.list_header()?;
                for _ in 0..count {
                    // Booleans in a list are one byte each.
                    if matches!(element, BOOL_TRUE | BOOL_FALSE) { self.take(1)? } else { self.skip(element, depth + 1)? }
                }
                Ok(())
            }
            MAP => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                if count > (self.bytes.len() - self.at) as u64 {
                    return Err(format!("a map of {count} entries in {} bytes", self.bytes.len()));
                }
                let types = self.byte()?;
                for _ in 0..count {
                    self.skip(types >> 4, depth + 1)?;
                    self.skip(types & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            STRUCT => {
                let mut id = 0i16;
                while let Some((_, kind)) = self.field_header(&mut id)? {
                    self.skip(kind, depth + 1)?;
                }
                Ok(())
            }
            other => Err(format!("an unknown Thrift type {other}")),
        }
    }
}

/// Refuses a file whose dictionary pages claim more values than their bytes can hold. The
/// `parquet` crate sizes its dictionary buffer from a page header's claimed count before it
/// reads the values (`set_dict`): a 1,297-byte file claiming about a billion Int32 values made
/// it allocate 4 GB (found by fuzzing `parquet_backend`). Each column chunk's first page is
/// checked: its count against the bytes the crate will hand `set_dict` — the page's
/// uncompressed size, which the crate checks the decompressed bytes against before using
/// them, or, for an uncompressed chunk, the bytes stored. A plain header (the fields a
/// dictionary page has, with their types) is read here from its bytes; any other is read by
/// the crate's own page reader (which decompresses the page), so that the guard never reads a
/// header otherwise than the crate does. Decompressing every dictionary took a tenth of a
/// large scan. `columns`: the leaf columns to check (`None`: all).
pub fn check_dictionaries(
    file: &std::fs::File,
    metadata: &parquet::file::metadata::ParquetMetaData,
    columns: Option<&[usize]>,
) -> Result<(), String> {
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            if columns.is_some_and(|cs| !cs.contains(&c)) || chunk.dictionary_page_offset().is_none() {
                continue;
            }
            let Some(width) = value_width(chunk) else { continue };
            let (offset, len) = chunk.byte_range();
            let window = len.min(HEADER_WINDOW).min(file_len.saturating_sub(offset));
            let plain = read_at(file, offset, window)?;
            let claim = match page_sizes(&mut Reader { bytes: &plain, at: 0 }) {
                Some(page) => {
                    let compressed = chunk.compression() != parquet::basic::Compression::UNCOMPRESSED;
                    page.dictionary_values.map(|n| (n, if compressed { page.uncompressed } else { page.stored }))
                }
                None => crates_reading(file, group, chunk)?,
            };
            if let Some((num_values, bytes)) = claim
                && num_values.max(0) as u64 * width > bytes.max(0) as u64
            {
                return Err(format!(
                    "not a readable Parquet file: row group {g}, column '{}': a dictionary page claims {num_values} values in {bytes} bytes",
                    chunk.column_path(),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a file with a dictionary page anywhere in the chunks read that claims more values
/// than its bytes hold: the crate sets a dictionary from any dictionary page it meets in a
/// chunk, not only from the first ([`check_dictionaries`] reads only that one, from the
/// footer's offsets, cheaply, for every column when a file is opened). Here the chunks of the
/// row groups and leaf columns kept by `read` are walked with the crate's own page reader:
/// data pages skipped by their headers, dictionary pages read (decompressed) and checked.
pub fn check_pages<R: parquet::file::reader::ChunkReader + 'static>(
    reader: std::sync::Arc<R>,
    metadata: &parquet::file::metadata::ParquetMetaData,
    read: impl Fn(usize, usize) -> bool,
) -> Result<(), String> {
    use parquet::column::page::{Page, PageReader};
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            let Some(width) = value_width(chunk).filter(|_| read(g, c)) else { continue };
            let rows = usize::try_from(group.num_rows()).unwrap_or(0);
            let mut pages = parquet::file::serialized_reader::SerializedPageReader::new(reader.clone(), chunk, rows, None)
                .map_err(|e| e.to_string())?;
            while let Some(page) = pages.peek_next_page().map_err(|e| e.to_string())? {
                if !page.is_dict {
                    pages.skip_next_page().map_err(|e| e.to_string())?;
                    continue;
                }
                if let Some(Page::DictionaryPage { buf, num_values, .. }) = pages.get_next_page().map_err(|e| e.to_string())?
                    && u64::from(num_values) * width > buf.len() as u64
                {
                    return Err(format!(
                        "not a readable Parquet file: row group {g}, column '{}': a dictionary page claims {num_values} values in {} bytes",
                        chunk.column_path(),
                        buf.len()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The least a plain-encoded dictionary value of the chunk's type takes (`None`: booleans,
/// which are not checked).
fn value_width(chunk: &parquet::file::metadata::ColumnChunkMetaData) -> Option<u64> {
    use parquet::basic::Type as Physical;
    Some(match chunk.column_type() {
        Physical::BOOLEAN => return None,
        Physical::INT32 | Physical::FLOAT | Physical::BYTE_ARRAY => 4,
        Physical::INT64 | Physical::DOUBLE => 8,
        Physical::INT96 => 12,
        Physical::FIXED_LEN_BYTE_ARRAY => chunk.column_descr().type_length().max(1) as u64,
    })
}

/// How much of a chunk's start is read for its first page header.
const HEADER_WINDOW: u64 = 4096;

/// A chunk's first page as the `parquet` crate reads it (decompressed): a dictionary page's
/// count and bytes, or `None`.
fn crates_reading(
    file: &std::fs::File,
    group: &parquet::file::metadata::RowGroupMetaData,
    chunk: &parquet::file::metadata::ColumnChunkMetaData,
) -> Result<Option<(i64, i64)>, String> {
    use parquet::column::page::{Page, PageReader};
    let reader = std::sync::Arc::new(file.try_clone().map_err(|e| e.to_string())?);
    let mut pages =
        parquet::file::serialized_reader::SerializedPageReader::new(reader, chunk, usize::try_from(group.num_rows()).unwrap_or(0), None)
            .map_err(|e| e.to_string())?;
    Ok(match pages.get_next_page().map_err(|e| e.to_string())? {
        Some(Page::DictionaryPage { buf, num_values, .. }) => Some((i64::from(num_values), buf.len() as i64)),
        _ => None,
    })
}

/// What [`check_dictionaries`] reads of a page header.
struct PageSizes {
    uncompressed: i64,
    stored: i64,
    /// A dictionary page's number of values (`None`: not a dictionary page).
    dictionary_values: Option<i64>,
}

/// Up to `len` bytes of `file` from `offset` (fewer at its end).
fn read_at(file: &std::fs::File, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|e| e.to_string())?];
    let mut got = 0;
    while got < bytes.len() {
        match file.read_at(&mut bytes[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    bytes.truncate(got);
    Ok(bytes)
}

/// A plain Thrift `PageHeader`: only its type (field 1), sizes (2, 3), CRC (4) and dictionary
/// page header (7: count, encoding, is-sorted), each of its own Thrift type. The crate reads
/// these fields by their ids whatever type they declare, and other fields its own way, so
/// `None` for anything else (or bytes that end early): the caller then lets the crate read it.
fn page_sizes(r: &mut Reader) -> Option<PageSizes> {
    const DICTIONARY_PAGE: i64 = 2;
    let mut sizes = PageSizes { uncompressed: 0, stored: 0, dictionary_values: None };
    let mut dictionary = false;
    let mut id = 0i16;
    while let Some((field, kind)) = r.field_header(&mut id).ok()? {
        match (field, kind) {
            (1, I32) => dictionary = r.i32().ok()? == DICTIONARY_PAGE,
            (2, I32) => sizes.uncompressed = r.i32().ok()?,
            (3, I32) => sizes.stored = r.i32().ok()?,
            (4, I32) => {
                r.i32().ok()?;
            }
            (7, STRUCT) => {
                let mut id = 0i16;
                while let Some((field, kind)) = r.field_header(&mut id).ok()? {
                    match (field, kind) {
                        (1, I32) => sizes.dictionary_values = Some(r.i32().ok()?),
                        (2, I32) => {
                            r.i32().ok()?;
                        }
                        (3, BOOL_TRUE | BOOL_FALSE) => {}
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    if !dictionary {
        sizes.dictionary_values = None;
    }
    Some(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(bytes: &[u8]) -> Option<(i64, i64, Option<i64>)> {
        page_sizes(&mut Reader { bytes, at: 0 }).map(|p| (p.uncompressed, p.stored, p.dictionary_values))
    }

    /// A plain dictionary page header is read here; one with a known field of another Thrift
    /// type (which the crate would read by its id, not its type), a field read here does not
    /// know, or bytes that end early, is left to the crate's own reader.
    #[test]
    fn only_plain_page_headers_are_read_here() {
        // type 2 (dictionary), sizes 100 and 80, crc, {count 25, encoding 0, not sorted}
        let plain = [0x15, 0x04, 0x15, 0xc8, 0x01, 0x15, 0xa0, 0x01, 0x15, 0x02, 0x3c, 0x15, 0x32, 0x15, 0x00, 0x12, 0x00, 0x00];
        assert_eq!(sizes(&plain), Some((100, 80, Some(25))));
        // The same as a data page (type 0): no count.
        let mut data = plain;
        data[1] = 0x00;
        assert_eq!(sizes(&data), Some((100, 80, None)));
        // Field 1 declared an i64: the guard would skip it where the crate reads a type of 2
        // and a count of 2^30 (found in review).
        let typed = [0x16, 0x04, 0x15, 0x08, 0x15, 0x08, 0x4c, 0x15, 0x80, 0x80, 0x80, 0x80, 0x08, 0x15, 0x00, 0x00, 0x00];
        assert_eq!(sizes(&typed), None);
        // The count declared an i64.
        let mut count = plain;
        count[11] = 0x16;
        assert_eq!(sizes(&count), None);
        // A data page header (field 5) and bytes that end early.
        assert_eq!(sizes(&[0x15, 0x00, 0x15, 0x02, 0x15, 0x02, 0x2c, 0x15, 0x02, 0x00, 0x00]), None);
        assert_eq!(sizes(&plain[..9]), None);
    }

    /// A header the fast path leaves to the crate is still checked: the crate's reading of the
    /// fuzz-found file gives its claim.
    #[test]
    fn the_crates_reading_gives_the_claim() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz/parquet_backend/oom-ea029f1c.parquet");
        let file = std::fs::File::open(&path).unwrap();
        let metadata = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&file).unwrap();
        let file = &file;
        let claims: Vec<_> = metadata
            .row_groups()
            .iter()
            .flat_map(|g| g.columns().iter().filter(|c| c.dictionary_page_offset().is_some()).map(move |c| crates_reading(file, g, c)))
            .collect();
        assert!(claims.iter().any(|c| matches!(c, Ok(Some((1073741828, _))))), "{claims:?}");
    }

    /// A dictionary page after a chunk's first page, claiming 2^30 values in a few hundred
    /// bytes (a data page of a valid file overwritten by one of the same length): the
    /// first-page check cannot see it, the page walk refuses it (found in review: the crate
    /// sets a dictionary from any dictionary page in a chunk).
    #[test]
    fn a_dictionary_page_in_the_middle_of_a_chunk_is_checked() {
        use std::io::{Read, Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let values = arrow_array::Int32Array::from_iter_values((0..2000).map(|i| i % 7));
        let batch = arrow_array::RecordBatch::try_from_iter([("x", std::sync::Arc::new(values) as arrow_array::ArrayRef)]).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::UNCOMPRESSED)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
            .build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let mut bytes = vec![];
        std::fs::File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
        let metadata =
            parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&std::fs::File::open(&path).unwrap()).unwrap();
        // A page at `at`: its header's length and its stored size.
        let page = |at: usize| {
            let mut r = Reader { bytes: &bytes[at..], at: 0 };
            let (mut id, mut stored) = (0i16, 0);
            while let Some((field, kind)) = r.field_header(&mut id).unwrap() {
                if field == 3 { stored = r.i32().unwrap() as usize } else { r.skip(kind, 0).unwrap() }
            }
            (r.at, stored)
        };
        let start = metadata.row_group(0).column(0).byte_range().0 as usize;
        let (header, stored) = page(start);
        let second = start + header + stored;
        let (header, stored) = page(second);
        let total = header + stored;
        // A dictionary page header (type 2, sizes y, {count 2^30, plain}) and y bytes.
        let dictionary = |y: usize| {
            let varint = |mut v: u64, out: &mut Vec<u8>| loop {
                if v < 0x80 {
                    out.push(v as u8);
                    break;
                }
                out.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            };
            let mut h = vec![0x15, 0x04, 0x15];
            varint(2 * y as u64, &mut h);
            h.push(0x15);
            varint(2 * y as u64, &mut h);
            h.extend([0x4c, 0x15]);
            varint(2 << 30, &mut h);
            h.extend([0x15, 0x00, 0x00, 0x00]);
            h
        };
        let y = (1..total).find(|&y| dictionary(y).len() + y == total).expect("a size that fits");
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(second as u64)).unwrap();
        f.write_all(&dictionary(y)).unwrap();
        f.write_all(&vec![0u8; y]).unwrap();
        drop(f);
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(check_dictionaries(&file, &metadata, None), Ok(()), "the first page is a valid dictionary");
        let got = check_pages(std::sync::Arc::new(file), &metadata, |_, _| true);
        let says = format!("a dictionary page claims 1073741824 values in {y} bytes");
        assert!(got.as_ref().is_err_and(|m| m.contains(&says)), "{got:?}");
    }

    #[test]
    fn depth_follows_the_child_counts() {
        assert_eq!(depth(&[]), 0);
        assert_eq!(depth(&[3, 0, 0, 0]), 1);
        assert_eq!(depth(&[2, 1, 0, 0]), 2);
        assert_eq!(depth(&[1, 1, 1, 0]), 3);
        assert_eq!(depth(&[2, 0, 1, 1, 0]), 3);
    }

    #[test]
    fn files_quarry_writes_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let columns = vec![crate::columns::ColumnSpec::patient_id()];
        let target = crate::output::Target::File(path.clone(), crate::output::Format::Parquet);
        crate::output::write_tables(&target, vec![crate::output::Table { name: "t".into(), columns, rows: vec![] }]).unwrap();
        check(&mut std::fs::File::open(&path).unwrap()).unwrap();
    }
}
