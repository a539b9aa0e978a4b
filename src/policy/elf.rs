//! What an executable needs from the kernel to run: the ELF interpreter named in
//! its `PT_INTERP` header, or the interpreter of a `#!` script.
//!
//! Wall 7 (what may be executed).
//!
//! Read once, on the host, while the policy is validated: the Landlock wall
//! grants `EXECUTE` on exactly the executables and these interpreters.

use std::io::Read;
use std::path::{Path, PathBuf};

/// How the kernel starts an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loader {
    /// A static ELF: nothing else is opened for execution.
    Static,
    /// A dynamic ELF with this `PT_INTERP` (as written in the file).
    Elf(PathBuf),
    /// A `#!` script with this interpreter.
    Script(PathBuf),
}

/// Why an executable's loader cannot be known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// The file cannot be opened or read.
    #[error("cannot be read: {0}")]
    Read(#[source] std::io::Error),
    /// A `#!` line whose interpreter is relative.
    #[error("is a script whose interpreter {0:?} is not an absolute path")]
    RelativeInterpreter(String),
    /// Neither magic.
    #[error("is neither an ELF file nor a #! script")]
    NotExecutable,
    /// The ELF headers do not hold together.
    #[error("has a malformed ELF header")]
    Malformed,
}

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(s)
    } else {
        u16::from_be_bytes(s)
    })
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(s)
    } else {
        u32::from_be_bytes(s)
    })
}

fn u64_at(b: &[u8], at: usize, le: bool) -> Option<u64> {
    let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(if le {
        u64::from_le_bytes(s)
    } else {
        u64::from_be_bytes(s)
    })
}

/// Finds how the kernel would start the file whose first bytes are `head`;
/// `read_at(offset, len)` reads more of it.
pub fn parse(head: &[u8], read_at: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>) -> Result<Loader, ElfError> {
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let text = String::from_utf8_lossy(line);
        let interp = text.split_whitespace().next().unwrap_or_default();
        if !interp.starts_with('/') {
            return Err(ElfError::RelativeInterpreter(interp.to_string()));
        }
        return Ok(Loader::Script(PathBuf::from(interp)));
    }
    if head.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError::NotExecutable);
    }
    let bad = || ElfError::Malformed;
    let is64 = match head.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(bad()),
    };
    let le = match head.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err(bad()),
    };
    let (phoff, entsize, num) = if is64 {
        (u64_at(head, 0x20, le), u16_at(head, 0x36, le), u16_at(head, 0x38, le))
    } else {
        (
            u32_at(head, 0x1c, le).map(u64::from),
            u16_at(head, 0x2a, le),
            u16_at(head, 0x2c, le),
        )
    };
    let (phoff, entsize, num) = (
        phoff.ok_or_else(bad)?,
        usize::from(entsize.ok_or_else(bad)?),
        num.ok_or_else(bad)?,
    );
    if num > 512 || entsize < if is64 { 56 } else { 32 } {
        return Err(bad());
    }
    let table = read_at(phoff, entsize * usize::from(num)).ok_or_else(bad)?;
    for i in 0..usize::from(num) {
        let ph = table.get(i * entsize..(i + 1) * entsize).ok_or_else(bad)?;
        if u32_at(ph, 0, le) != Some(PT_INTERP) {
            continue;
        }
        let (off, size) = if is64 {
            (u64_at(ph, 8, le), u64_at(ph, 32, le))
        } else {
            (u32_at(ph, 4, le).map(u64::from), u32_at(ph, 16, le).map(u64::from))
        };
        let (off, size) = (off.ok_or_else(bad)?, size.ok_or_else(bad)?);
        if size == 0 || size > 4096 {
            return Err(bad());
        }
        let raw = read_at(off, size as usize).ok_or_else(bad)?;
        let name = raw.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Loader::Elf(PathBuf::from(String::from_utf8_lossy(name).into_owned())));
    }
    Ok(Loader::Static)
}

/// Reads `path` on the host and finds its [`Loader`].
pub fn loader_of(path: &Path) -> Result<Loader, ElfError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(ElfError::Read)?;
    let mut head = vec![0u8; 256];
    let n = f.read(&mut head).map_err(ElfError::Read)?;
    head.truncate(n);
    let mut read_at = |off: u64, len: usize| -> Option<Vec<u8>> {
        f.seek(SeekFrom::Start(off)).ok()?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    parse(&head, &mut read_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_bytes(bytes: &[u8]) -> Result<Loader, ElfError> {
        let mut read_at = |off: u64, len: usize| {
            let start = usize::try_from(off).ok()?;
            bytes.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
        };
        parse(bytes, &mut read_at)
    }

    #[test]
    fn scripts_name_their_interpreter() {
        assert_eq!(
            from_bytes(b"#!/usr/bin/python3.11 -I\nprint()").ok(),
            Some(Loader::Script("/usr/bin/python3.11".into()))
        );
        assert!(matches!(
            from_bytes(b"#!python\n"),
            Err(ElfError::RelativeInterpreter(_))
        ));
    }

    #[test]
    fn a_hand_made_elf64_with_pt_interp_is_read() {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        f[0x40..0x44].copy_from_slice(&PT_INTERP.to_le_bytes());
        f[0x48..0x50].copy_from_slice(&0x100u64.to_le_bytes());
        let name = b"/lib64/ld-linux-x86-64.so.2\0";
        f[0x60..0x68].copy_from_slice(&(name.len() as u64).to_le_bytes());
        f[0x100..0x100 + name.len()].copy_from_slice(name);
        assert_eq!(
            from_bytes(&f).ok(),
            Some(Loader::Elf("/lib64/ld-linux-x86-64.so.2".into()))
        );
        f[0x40] = 1; // PT_LOAD instead: a static binary
        assert_eq!(from_bytes(&f).ok(), Some(Loader::Static));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x7fELF", b"\x7fELF\x02\x01", b"MZ", &[0xffu8; 64]] {
            assert!(from_bytes(bytes).is_err());
        }
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        f[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        f[0x36] = 56;
        f[0x38] = 3;
        assert!(from_bytes(&f).is_err());
    }
}
