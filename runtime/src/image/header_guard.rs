//! Bounds on tar metadata entries. The `tar` crate reads a GNU long name or link (`L`, `K`)
//! and a PAX header (`x`, `g`) whole into memory before the entry they describe, whatever
//! size the header claims: a hostile layer could make a multi-gigabyte one from a few
//! megabytes of gzip. [`HeaderGuard`] follows the tar framing of the stream passing through
//! it and fails the read that completes such a header when its size is over the limit.

use std::io::Read;

const BLOCK: usize = 512;
/// Longer than any path Linux accepts (PATH_MAX is 4096).
pub const LONG_NAME_LIMIT: u64 = 64 << 10;
/// Room for many extended attributes (ext4 allows one block of them per file).
pub const PAX_LIMIT: u64 = 1 << 20;

/// The error a guarded read fails with, inside an `io::Error` of kind `InvalidData`.
#[derive(Debug, thiserror::Error)]
#[error("{kind} of {size} bytes is over the limit of {limit} bytes")]
pub struct OversizedHeader {
    /// The header's own name field (e.g. `././@LongLink`).
    pub name: String,
    pub kind: &'static str,
    pub size: u64,
    pub limit: u64,
}

impl OversizedHeader {
    /// Find one in a chain of errors (the `tar` crate returns ours as is or wrapped).
    pub fn find(error: &std::io::Error) -> Option<&OversizedHeader> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<OversizedHeader>() {
                return Some(found);
            }
            if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                if let Some(found) = inner.downcast_ref::<OversizedHeader>() {
                    return Some(found);
                }
            }
            current = error.source();
        }
        None
    }
}

/// Passes a tar stream through unchanged, checking the sizes of metadata entries.
pub struct HeaderGuard<R> {
    inner: R,
    header: [u8; BLOCK],
    filled: usize,
    /// Data (with padding) of the current entry still to pass.
    skip: u64,
    /// The data of a PAX header being passed, kept to read a `size` override from it.
    pax: Option<Vec<u8>>,
    /// A PAX `size` for the next entry that is not itself a metadata entry.
    pax_size: Option<u64>,
    /// Past the end-of-archive block or a sparse entry (refused by the unpacker): the rest
    /// passes unchecked.
    done: bool,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> HeaderGuard<R> {
        HeaderGuard { inner, header: [0; BLOCK], filled: 0, skip: 0, pax: None, pax_size: None, done: false }
    }

    fn track(&mut self, mut bytes: &[u8]) -> Result<(), OversizedHeader> {
        while !bytes.is_empty() && !self.done {
            if self.skip > 0 {
                let n = bytes.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                if let Some(pax) = &mut self.pax {
                    pax.extend_from_slice(&bytes[..n]);
                }
                self.skip -= n as u64;
                bytes = &bytes[n..];
                if self.skip == 0 {
                    if let Some(pax) = self.pax.take() {
                        self.pax_size = pax_value(&pax, "size").or(self.pax_size);
                    }
                }
                continue;
            }
            let n = bytes.len().min(BLOCK - self.filled);
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.header_done()?;
            }
        }
        Ok(())
    }

    fn header_done(&mut self) -> Result<(), OversizedHeader> {
        let header = &self.header;
        if header.iter().all(|b| *b == 0) {
            self.done = true;
            return Ok(());
        }
        let size = header_size(&header[124..136]);
        let (kind, limit) = match header[156] {
            b'L' => ("GNU long name", LONG_NAME_LIMIT),
            b'K' => ("GNU long link name", LONG_NAME_LIMIT),
            b'x' => ("PAX extended header", PAX_LIMIT),
            b'g' => ("PAX global header", PAX_LIMIT),
            b'S' => {
                self.done = true;
                return Ok(());
            }
            _ => {
                // A file entry: its size may come from the PAX header before it.
                let size = self.pax_size.take().unwrap_or(size);
                self.skip = padded(size);
                return Ok(());
            }
        };
        if size > limit {
            let name_end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
            let name = String::from_utf8_lossy(&header[..name_end]).into_owned();
            return Err(OversizedHeader { name, kind, size, limit });
        }
        if header[156] == b'x' {
            self.pax = Some(Vec::with_capacity(size as usize));
        }
        self.skip = padded(size);
        if self.skip == 0 && self.pax.is_some() {
            self.pax = None;
        }
        Ok(())
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.track(&buf[..n]).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

/// A numeric header field: octal text, or base-256 when the high bit of the first byte is set.
fn header_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, b| n.saturating_mul(256).saturating_add(u64::from(*b)));
    }
    let text = String::from_utf8_lossy(field);
    u64::from_str_radix(text.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
}

/// A numeric value of PAX records (`"<length> <key>=<value>\n"`, the length counting the
/// whole record), read by length as the `tar` crate reads them.
fn pax_value(mut records: &[u8], key: &str) -> Option<u64> {
    while !records.is_empty() {
        let space = records.iter().position(|b| *b == b' ')?;
        let length: usize = std::str::from_utf8(&records[..space]).ok()?.parse().ok()?;
        let record = records.get(space + 1..length)?;
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(key.as_bytes()).and_then(|rest| rest.strip_prefix(b"=")) {
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
        records = &records[length..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_size(size);
        header.set_cksum();
        *header.as_bytes()
    }

    /// Pass `stream` through a guard in odd-sized chunks.
    fn pass(stream: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut guard = HeaderGuard::new(stream);
        let mut out = Vec::new();
        let mut buf = [0u8; 77];
        loop {
            let n = guard.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn passes_ordinary_archives_unchanged() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1000);
        header.set_mode(0o644);
        let long = format!("{}/file", "d".repeat(300));
        builder.append_data(&mut header, &long, &[7u8; 1000][..]).unwrap();
        let mut pax = tar::Builder::new(Vec::new());
        pax.append_pax_extensions([("SCHILY.xattr.user.a", &b"1"[..])]).unwrap();
        let mut archive = pax.into_inner().unwrap();
        archive.extend(builder.into_inner().unwrap());
        assert_eq!(pass(&archive).unwrap(), archive);
    }

    #[test]
    fn refuses_oversized_metadata_headers() {
        for (kind, limit) in [(b'L', LONG_NAME_LIMIT), (b'K', LONG_NAME_LIMIT), (b'x', PAX_LIMIT), (b'g', PAX_LIMIT)] {
            let mut stream = header("././@LongLink", kind, limit + 1).to_vec();
            stream.extend_from_slice(&[b'a'; 2048]);
            let error = pass(&stream).unwrap_err();
            let found = OversizedHeader::find(&error).expect("an oversized header error");
            assert_eq!((found.name.as_str(), found.size), ("././@LongLink", limit + 1));
            // At the limit is fine.
            let mut stream = header("ok", kind, 10).to_vec();
            stream.extend_from_slice(&[b'a'; 512]);
            assert!(pass(&stream).is_ok());
        }
    }

    #[test]
    fn follows_pax_size_overrides_and_base256_sizes() {
        // A PAX size makes the next entry's data 1024 bytes although its header says 0; a
        // long name hidden in that data must not be taken for a header.
        let records = b"13 size=1024\n";
        let mut stream = header("pax", b'x', records.len() as u64).to_vec();
        stream.extend_from_slice(records);
        stream.resize(2 * BLOCK, 0);
        stream.extend_from_slice(&header("big", b'0', 0));
        stream.extend_from_slice(&header("not-a-header", b'L', u64::MAX / 2));
        stream.extend_from_slice(&[0; BLOCK]);
        assert!(pass(&stream).is_ok());
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[10..].copy_from_slice(&[1, 0]);
        assert_eq!(header_size(&field), 256);
        assert_eq!(header_size(b"00000001750\0"), 1000);
        // Records are read by length: a value holding a newline hides nothing.
        assert_eq!(pax_value(b"23 comment=a\n9 size=7\n\n13 size=1024\n", "size"), Some(1024));
        assert_eq!(pax_value(b"13 size=1024\n", "size"), Some(1024));
        assert_eq!(pax_value(b"99 size=1", "size"), None);
    }
}
