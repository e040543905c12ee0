//! Bounds on tar metadata entries. The `tar` crate reads a GNU long name or link (`L`, `K`)
//! and a PAX header (`x`, `g`) whole into memory before the entry they describe, whatever
//! size the header claims: a hostile layer could make a multi-gigabyte one from a few
//! megabytes of gzip. [`HeaderGuard`] follows the tar framing of the stream passing through
//! it and fails the read that completes such a header when its size is over the limit.
//!
//! The framing must be tar's to the byte, or a header could hide from the guard as another
//! entry's data: headers and PAX records are parsed by the `tar` crate's own code, and its
//! rules are followed (L, K and x are metadata only under ustar or GNU magic; a PAX size
//! applies to the next entry unless its type byte is a metadata one).

use std::io::Read;

use tar::EntryType;

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
    /// The `size` of the pending PAX header, for the entry tar hands over next.
    pax_size: Option<u64>,
    /// Past the end-of-archive block, a sparse entry (refused by the unpacker) or a header
    /// tar fails on: the rest passes unchecked.
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
                        self.pax_size = pax_size(&pax);
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
        if self.header.iter().all(|b| *b == 0) {
            self.done = true;
            return Ok(());
        }
        // Parsed by the `tar` crate's own code: a field read differently here than there
        // would put the two out of step on where entries start.
        let header = tar::Header::from_byte_slice(&self.header);
        let Ok(own_size) = header.entry_size() else {
            // tar fails on this header: nothing after it is unpacked.
            self.done = true;
            return Ok(());
        };
        let kind = header.entry_type();
        // As tar (`is_recognized_header`): L, K and x are metadata only in a ustar or GNU
        // header; with a v7 one (neither magic) they are ordinary entries of their own size.
        let recognized = header.as_ustar().is_some() || header.as_gnu().is_some();
        let metadata = match kind {
            EntryType::GNULongName if recognized => Some(("GNU long name", LONG_NAME_LIMIT)),
            EntryType::GNULongLink if recognized => Some(("GNU long link name", LONG_NAME_LIMIT)),
            EntryType::XHeader if recognized => Some(("PAX extended header", PAX_LIMIT)),
            EntryType::GNUSparse => {
                self.done = true;
                return Ok(());
            }
            _ => None,
        };
        let Some((what, limit)) = metadata else {
            return self.ordinary_entry(kind, own_size, recognized);
        };
        self.check_limit(what, own_size, limit)?;
        if kind == EntryType::XHeader {
            self.pax = Some(Vec::with_capacity(own_size as usize));
        }
        self.skip = padded(own_size);
        if self.skip == 0 && self.pax.take().is_some() {
            // An empty PAX header: no records, no size.
            self.pax_size = None;
        }
        Ok(())
    }

    /// An entry tar hands to the unpacker: it takes the pending PAX header (tar attaches it
    /// to this entry), whose `size` applies unless the entry's type is one of the metadata
    /// types (tar decides that from the type byte alone, whatever the magic).
    fn ordinary_entry(&mut self, kind: EntryType, own_size: u64, recognized: bool) -> Result<(), OversizedHeader> {
        let pax_size = self.pax_size.take();
        let metadata_type = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let size = if metadata_type { own_size } else { pax_size.unwrap_or(own_size) };
        if recognized && kind.is_pax_global_extensions() {
            // Skipped by the unpacker, never read whole; bounded all the same, as no real
            // archive has a global header anywhere near the limit.
            self.check_limit("PAX global header", size, PAX_LIMIT)?;
        }
        self.skip = padded(size);
        Ok(())
    }

    fn check_limit(&self, kind: &'static str, size: u64, limit: u64) -> Result<(), OversizedHeader> {
        if size <= limit {
            return Ok(());
        }
        let header = &self.header;
        let name_end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..name_end]).into_owned();
        Err(OversizedHeader { name, kind, size, limit })
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

/// The `size` of PAX records exactly as tar reads it (`pax_extensions_value`): records split
/// at newlines, the first malformed record or unreadable `size` value ends the search with none.
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() != Ok("size") {
            continue;
        }
        return record.value().ok()?.parse().ok();
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
        // Base-256 sizes, read by tar's own parser.
        let mut big = tar::Header::new_gnu();
        big.set_entry_type(EntryType::GNULongName);
        big.set_size(u64::MAX / 2);
        big.set_cksum();
        assert_eq!(big.as_bytes()[124] & 0x80, 0x80, "base-256 encoded");
        let error = pass(big.as_bytes()).unwrap_err();
        assert_eq!(OversizedHeader::find(&error).unwrap().size, u64::MAX / 2);
    }

    #[test]
    fn reads_pax_records_as_tar_does() {
        assert_eq!(pax_size(b"13 size=1024\n"), Some(1024));
        assert_eq!(pax_size(b"18 path=some/file\n13 size=1024\n"), Some(1024));
        // tar splits records at newlines: a record whose length covers a newline is malformed
        // to it, and ends its search.
        assert_eq!(pax_size(b"23 comment=a\n9 size=7\n\n13 size=1024\n"), None);
        assert_eq!(pax_size(b"99 size=1"), None);
        assert_eq!(pax_size(b"12 size=-1\n13 size=1024\n"), None);
    }

    /// The first header of a v7 archive (no magic) of type `kind`.
    fn v7_header(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(EntryType::new(kind));
        header.set_size(size);
        header.set_cksum();
        assert!(header.as_ustar().is_none() && header.as_gnu().is_none());
        *header.as_bytes()
    }

    /// Data padded to whole blocks.
    fn block_data(data: &[u8]) -> Vec<u8> {
        let mut padded = data.to_vec();
        padded.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        padded
    }

    #[test]
    fn v7_metadata_types_are_ordinary_entries_as_for_tar() {
        // tar takes a v7 `x` for an ordinary file of its own size: the `size` in its data
        // applies to nothing, and the `L` after the next (empty) file is a real header that
        // tar would read whole. The guard must see it where tar does.
        let records = b"13 size=1536\n";
        let mut stream = v7_header("pax", b'x', records.len() as u64).to_vec();
        stream.extend(block_data(records));
        stream.extend_from_slice(&header("empty", b'0', 0));
        stream.extend_from_slice(&header("././@LongLink", b'L', 4 << 30));
        stream.extend_from_slice(&[b'a'; 2048]);
        let error = pass(&stream).unwrap_err();
        let found = OversizedHeader::find(&error).expect("an oversized header error");
        assert_eq!((found.name.as_str(), found.kind, found.size), ("././@LongLink", "GNU long name", 4 << 30));

        // A v7 `L` or `x` is not metadata whatever size it claims: tar passes it over by
        // its size (the unpacker skips it), and so does the guard.
        for kind in [b'L', b'K', b'x'] {
            let mut stream = v7_header("v7", kind, 3 * PAX_LIMIT).to_vec();
            stream.extend(vec![b'a'; 3 * PAX_LIMIT as usize]);
            stream.extend_from_slice(&header("././@LongLink", b'L', 4 << 30));
            let error = pass(&stream).unwrap_err();
            assert_eq!(OversizedHeader::find(&error).unwrap().name, "././@LongLink");
        }
    }

    #[test]
    fn a_pax_size_tar_cannot_read_does_not_hide_a_header() {
        // Read by record length, these records would say `size=1024` and make the guard
        // pass over the `L` header as the next file's data; tar finds no size (the records
        // are malformed to it) and reads that header.
        let records = b"23 comment=a\n9 size=7\n\n13 size=1024\n";
        let mut stream = header("pax", b'x', records.len() as u64).to_vec();
        stream.extend(block_data(records));
        stream.extend_from_slice(&header("empty", b'0', 0));
        stream.extend_from_slice(&header("././@LongLink", b'L', 4 << 30));
        stream.extend_from_slice(&[b'a'; 2048]);
        let error = pass(&stream).unwrap_err();
        assert_eq!(OversizedHeader::find(&error).unwrap().name, "././@LongLink");
    }

    #[test]
    fn pax_size_does_not_apply_to_metadata_typed_entries() {
        // tar applies a PAX size to the next entry unless its type byte is L, K, x or g
        // (magic or not), and that entry takes the PAX header: the file after a global
        // header has its own size.
        let records = b"13 size=1024\n";
        let mut stream = header("pax", b'x', records.len() as u64).to_vec();
        stream.extend(block_data(records));
        stream.extend_from_slice(&header("global", b'g', 0));
        stream.extend_from_slice(&header("empty", b'0', 0));
        stream.extend_from_slice(&header("././@LongLink", b'L', 4 << 30));
        stream.extend_from_slice(&[b'a'; 2048]);
        let error = pass(&stream).unwrap_err();
        assert_eq!(OversizedHeader::find(&error).unwrap().name, "././@LongLink");
    }

    /// An archive mixing v7 metadata types, PAX sizes and plain entries passes whole, as tar reads it.
    #[test]
    fn passes_mixed_archives_as_tar_reads_them() {
        let records = b"13 size=1024\n";
        let mut stream = v7_header("v7pax", b'x', records.len() as u64).to_vec();
        stream.extend(block_data(records));
        stream.extend_from_slice(&header("pax", b'x', records.len() as u64));
        stream.extend(block_data(records));
        stream.extend_from_slice(&header("sized-by-pax", b'0', 0));
        stream.extend(vec![b'b'; 1024]);
        stream.extend_from_slice(&v7_header("v7long", b'L', 600));
        stream.extend(block_data(&[b'c'; 600]));
        stream.extend_from_slice(&header("last", b'0', 5));
        stream.extend(block_data(b"hello"));
        stream.extend_from_slice(&[0; 2 * BLOCK]);
        let mut archive = tar::Archive::new(HeaderGuard::new(stream.as_slice()));
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            seen.push((entry.path().unwrap().display().to_string(), entry.size()));
        }
        assert_eq!(
            seen,
            [("v7pax".into(), 13), ("sized-by-pax".into(), 1024), ("v7long".into(), 600), ("last".into(), 5)]
        );
    }
}
