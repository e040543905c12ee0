//! /proc/self/mountinfo's text: the kernel writes space, tab, newline and backslash in its
//! paths as `\ooo` octal escapes.

use std::path::PathBuf;

/// A mountinfo field with its octal escapes decoded.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount point (field 5) of every line, decoded.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).map(|field| PathBuf::from(unescape(field))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_kernels_escapes() {
        assert_eq!(unescape(r"/var/lib/my\040dir\134x"), r"/var/lib/my dir\x");
        assert_eq!(unescape(r"/no\escape\9"), r"/no\escape\9");
        let text = "36 35 98:0 / /mnt/a\\040b rw - ext4 /dev/vda rw\n37 35 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(mount_points(text), [PathBuf::from("/mnt/a b"), PathBuf::from("/proc")]);
    }
}
