//! Reading a file whose path is untrusted: typed into the editor, named in a saved session, given
//! on a command line. Only a regular file is opened (a FIFO would block `open`, a device never
//! ends), its size is capped before anything is read, and every read stays bounded by the cap,
//! even if the file grows meanwhile or reports a size of 0 (/proc). The MIDI importer and the
//! model loader both read through it, on whichever thread loads (the worker, or a CLI's).

use std::fs::File;
use std::io::{Read, Take};
use std::path::Path;

/// Why an untrusted file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// A folder, device, pipe or socket.
    NotAFile,
    /// Over the cap: the size the file reported, or the bytes read before it ran past the cap.
    TooLarge {
        bytes: u64,
    },
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// An open regular file, read at most `max` bytes far.
pub struct UntrustedFile {
    reader: Take<File>,
    len: u64,
    max: u64,
}

/// Opens `path` if it is a regular file of at most `max` bytes.
pub fn open(path: &Path, max: u64) -> Result<UntrustedFile, ReadError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge { bytes: meta.len() });
    }
    Ok(UntrustedFile {
        reader: File::open(path)?.take(max + 1),
        len: meta.len(),
        max,
    })
}

impl UntrustedFile {
    /// The size the file reported when it was opened (a capacity hint, not a promise).
    pub fn reported_len(&self) -> u64 {
        self.len
    }

    /// Appends up to `n` more bytes to `bytes` (fewer at the end of the file).
    pub fn read_up_to(&mut self, n: u64, bytes: &mut Vec<u8>) -> std::io::Result<()> {
        (&mut self.reader).take(n).read_to_end(bytes).map(|_| ())
    }

    /// Appends the rest of the file to `bytes`, which holds what was read before; fails if the
    /// whole ran past the cap.
    pub fn read_rest(mut self, bytes: &mut Vec<u8>) -> Result<(), ReadError> {
        self.reader.read_to_end(bytes)?;
        if bytes.len() as u64 > self.max {
            return Err(ReadError::TooLarge {
                bytes: bytes.len() as u64,
            });
        }
        Ok(())
    }
}

/// The whole of an untrusted file of at most `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = open(path, max)?;
    let mut bytes = Vec::with_capacity(file.reported_len() as usize);
    file.read_rest(&mut bytes)?;
    Ok(bytes)
}
