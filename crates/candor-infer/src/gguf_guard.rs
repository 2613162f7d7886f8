//! A walk over a GGUF file's header before candle reads it: every count and length the header
//! claims (tensors, metadata entries, strings, arrays, dimensions) is checked against the bytes
//! the file still holds, and every tensor's data (offset and size from its type and shape)
//! against the file's end. candle's reader allocates what the header says; a hostile or
//! corrupt file claiming 2^62 tensors or a terabyte string would exhaust memory before any
//! error. This reader allocates nothing the file does not hold.
//!
//! Written here rather than taken from a crate: it must only bound what candle will read
//! (GGUF v1–v3 layout, ggml's type sizes), and candle's own reader is the one that decodes.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{InferError, Result};

/// Most dimensions a ggml tensor has.
const MAX_DIMS: u64 = 4;
/// Default alignment of the tensor data section.
const DEFAULT_ALIGNMENT: u64 = 32;

/// (elements per block, bytes per block) of ggml type `id`, for the types candle reads.
fn type_layout(id: u32) -> Option<(u64, u64)> {
    Some(match id {
        0 => (1, 4),     // F32
        1 => (1, 2),     // F16
        30 => (1, 2),    // BF16
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292), // Q8_K
        _ => return None,
    })
}

/// Reads the header of one GGUF file with a running byte count.
struct Walker<R> {
    reader: R,
    position: u64,
    len: u64,
    /// GGUF v1 writes counts and lengths as u32, later versions as u64.
    wide: bool,
}

impl<R: Read + Seek> Walker<R> {
    fn bytes<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut buffer = [0u8; N];
        self.reader.read_exact(&mut buffer).map_err(|_| format!("the file ends at byte {} inside the header", self.len))?;
        self.position += N as u64;
        Ok(buffer)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A count or length (u32 in v1, u64 later).
    fn count(&mut self) -> std::result::Result<u64, String> {
        match self.wide {
            true => self.u64(),
            false => self.u32().map(u64::from),
        }
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.position)
    }

    /// Fails unless `count` items of at least `size` bytes each fit in what is left.
    fn claim(&self, count: u64, size: u64, what: &str) -> std::result::Result<(), String> {
        match count.checked_mul(size) {
            Some(bytes) if bytes <= self.remaining() => Ok(()),
            _ => Err(format!("the header claims {count} {what} at byte {} but the file holds only {} more bytes", self.position, self.remaining())),
        }
    }

    fn skip(&mut self, bytes: u64) -> std::result::Result<(), String> {
        self.claim(bytes, 1, "bytes")?;
        self.reader.seek(SeekFrom::Current(bytes as i64)).map_err(|e| e.to_string())?;
        self.position += bytes;
        Ok(())
    }

    /// A string's bytes (read only when `keep`, skipped otherwise).
    fn string(&mut self, keep: bool) -> std::result::Result<Vec<u8>, String> {
        let len = self.count()?;
        self.claim(len, 1, "string bytes")?;
        if !keep {
            self.skip(len)?;
            return Ok(Vec::new());
        }
        let mut bytes = vec![0u8; len as usize];
        self.reader.read_exact(&mut bytes).map_err(|e| e.to_string())?;
        self.position += len;
        Ok(bytes)
    }

    /// Skips one metadata value of type `kind`; returns it when it is a u32 (for the alignment).
    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<Option<u64>, String> {
        let fixed = |kind: u32| match kind {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match kind {
            4 => Ok(Some(u64::from(self.u32()?))),
            8 => self.string(false).map(|_| None),
            9 => {
                if depth > 2 {
                    return Err("metadata arrays nested deeper than 2".into());
                }
                let element = self.u32()?;
                let count = self.count()?;
                match fixed(element) {
                    Some(size) => self.skip(count.checked_mul(size).ok_or("an array size overflows")?)?,
                    None => {
                        // Strings and arrays take at least their length field each.
                        self.claim(count, if self.wide { 8 } else { 4 }, "array elements")?;
                        for _ in 0..count {
                            self.value(element, depth + 1)?;
                        }
                    }
                }
                Ok(None)
            }
            other => match fixed(other) {
                Some(size) => self.skip(size).map(|_| None),
                None => Err(format!("unknown metadata value type {other}")),
            },
        }
    }
}

/// Checks the header of the GGUF file at `path` (see the module docs); candle may then read it.
pub(crate) fn check_gguf_header(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| InferError::io(path, e))?;
    let len = file.metadata().map_err(|e| InferError::io(path, e))?.len();
    let mut walker = Walker { reader: BufReader::new(file), position: 0, len, wide: true };
    walk(&mut walker).map_err(|reason| InferError::InvalidGguf { path: path.to_path_buf(), reason })
}

fn walk<R: Read + Seek>(w: &mut Walker<R>) -> std::result::Result<(), String> {
    if &w.bytes::<4>()? != b"GGUF" {
        return Err("not a GGUF file (no GGUF magic)".into());
    }
    let version = w.u32()?;
    if !(1..=3).contains(&version) {
        return Err(format!("GGUF version {version} (1 to 3 are read)"));
    }
    w.wide = version >= 2;
    let tensors = w.count()?;
    let entries = w.count()?;
    // A tensor's description takes at least 24 bytes, a metadata entry at least 13.
    w.claim(tensors, 24, "tensors")?;
    w.claim(entries, 13, "metadata entries")?;
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..entries {
        let key = w.string(true)?;
        let kind = w.u32()?;
        let value = w.value(kind, 0)?;
        if key == b"general.alignment" {
            alignment = value.filter(|&a| a > 0 && a.is_power_of_two()).ok_or("`general.alignment` is not a power of two")?;
        }
    }
    let mut extents = Vec::new();
    for _ in 0..tensors {
        w.string(false)?;
        let dims = u64::from(w.u32()?);
        if dims > MAX_DIMS {
            return Err(format!("a tensor with {dims} dimensions (ggml has at most {MAX_DIMS})"));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            elements = elements.checked_mul(w.count()?).ok_or("a tensor's element count overflows")?;
        }
        let kind = w.u32()?;
        let offset = w.u64()?;
        if let Some((block, bytes)) = type_layout(kind) {
            let size = (elements / block).checked_mul(bytes).ok_or("a tensor's byte size overflows")?;
            extents.push((offset, size));
        }
    }
    let data_start = w.position.div_ceil(alignment) * alignment;
    for (offset, size) in extents {
        match data_start.checked_add(offset).and_then(|start| start.checked_add(size)) {
            Some(end) if end <= w.len => {}
            _ => return Err(format!("a tensor's data ({size} bytes at offset {offset}) runs past the file's end at byte {}", w.len)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn walk_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
        let mut walker = Walker { reader: Cursor::new(bytes.to_vec()), position: 0, len: bytes.len() as u64, wide: true };
        walk(&mut walker)
    }

    fn header(tensors: u64, entries: u64) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(tensors.to_le_bytes());
        bytes.extend(entries.to_le_bytes());
        bytes
    }

    #[test]
    fn a_header_claiming_2_to_the_62_tensors_is_refused_before_any_allocation() {
        let err = walk_bytes(&header(1 << 62, 0)).unwrap_err();
        assert!(err.contains("4611686018427387904 tensors"), "{err}");
    }

    #[test]
    fn a_string_longer_than_the_file_is_refused() {
        let mut bytes = header(0, 1);
        bytes.extend(u64::MAX.to_le_bytes()); // key length
        bytes.extend([0u8; 16]);
        let err = walk_bytes(&bytes).unwrap_err();
        assert!(err.contains("string bytes"), "{err}");
    }

    #[test]
    fn an_array_of_more_elements_than_bytes_is_refused() {
        let mut bytes = header(0, 1);
        bytes.extend(3u64.to_le_bytes());
        bytes.extend(b"key");
        bytes.extend(9u32.to_le_bytes()); // array
        bytes.extend(8u32.to_le_bytes()); // of strings
        bytes.extend((1u64 << 40).to_le_bytes());
        let err = walk_bytes(&bytes).unwrap_err();
        assert!(err.contains("array elements"), "{err}");
    }

    #[test]
    fn tensor_data_past_the_end_is_refused_and_a_good_header_passes() {
        let tensor = |dim: u64| {
            let mut bytes = header(1, 0);
            bytes.extend(1u64.to_le_bytes());
            bytes.extend(b"w");
            bytes.extend(1u32.to_le_bytes());
            bytes.extend(dim.to_le_bytes());
            bytes.extend(0u32.to_le_bytes()); // F32
            bytes.extend(0u64.to_le_bytes()); // offset
            bytes.resize(64, 0); // aligned data start at 64
            bytes.extend(vec![0u8; 16]); // 4 f32
            bytes
        };
        assert_eq!(walk_bytes(&tensor(4)), Ok(()));
        let err = walk_bytes(&tensor(1 << 40)).unwrap_err();
        assert!(err.contains("runs past the file's end"), "{err}");
    }
}
