//! Frames on the socket between a parent and its child process.
//!
//! A frame is a 4-byte little-endian length, a 1-byte kind and `length`
//! bytes of body. Every read is bounded: a length above the reader's
//! limit is an error before anything is allocated, and a peer that closes
//! mid-frame is an error, never a hang on data that will not come.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use crate::invoke::Answer;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    // Parent to child.
    /// The entry key (8 bytes), the isolate's name, then its start arguments.
    Start = 1,
    /// A message to handle and answer.
    Ask = 2,
    /// A message to handle; the answer is only whether it was handled.
    Cast = 3,
    /// End the isolate (the body: the exit reason for its `stopping`) and
    /// exit.
    Stop = 4,
    /// A pool task: its id (8 bytes), then its input.
    Task = 5,
    /// Cancel the pool task with this id (8 bytes) if it runs.
    Cancel = 6,
    // Child to parent.
    /// `start` returned the state: messages may come.
    Started = 10,
    /// The handler's value, encoded.
    Value = 11,
    /// The handler's error, encoded.
    Failed = 12,
    /// The handler panicked: the panic message.
    Panicked = 13,
    /// The message did not decode in the child: the codec's error.
    BadMessage = 15,
    /// The value or error could not be encoded: the codec's error.
    Unencodable = 16,
    /// A cast was handled.
    Done = 17,
    /// The isolate exited (it stopped itself, or `start` failed): the
    /// reason. The child exits after sending it, reading nothing more.
    Exited = 18,
    /// A pool task's progress value, encoded.
    Progress = 19,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Kind> {
        use Kind::*;
        Some(match byte {
            1 => Start,
            2 => Ask,
            3 => Cast,
            4 => Stop,
            5 => Task,
            6 => Cancel,
            10 => Started,
            11 => Value,
            12 => Failed,
            13 => Panicked,
            15 => BadMessage,
            16 => Unencodable,
            17 => Done,
            18 => Exited,
            19 => Progress,
            _ => return None,
        })
    }
}

impl Kind {
    /// The invocation outcome this frame answers with, if it is one.
    pub(crate) fn answer(self) -> Option<Answer> {
        Some(match self {
            Kind::Value => Answer::Value,
            Kind::Failed => Answer::Failed,
            Kind::Panicked => Answer::Panicked,
            Kind::BadMessage => Answer::BadInput,
            Kind::Unencodable => Answer::Unencodable,
            _ => return None,
        })
    }
}

impl From<Answer> for Kind {
    fn from(answer: Answer) -> Kind {
        match answer {
            Answer::Value => Kind::Value,
            Answer::Failed => Kind::Failed,
            Answer::Panicked => Kind::Panicked,
            Answer::BadInput => Kind::BadMessage,
            Answer::Unencodable => Kind::Unencodable,
        }
    }
}

/// Room a frame's body may take beyond the codec's limit: the start frame
/// carries a key and a name beside the arguments.
pub(crate) const OVERHEAD: usize = 4096;

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the socket between frames.
    Closed,
    /// The peer sent something that is not a frame of ours.
    Malformed(String),
    /// The peer announced a frame larger than allowed.
    TooLarge { size: usize, limit: usize },
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("the peer closed its channel"),
            ReadError::Malformed(why) => write!(f, "malformed frame: {why}"),
            ReadError::TooLarge { size, limit } => write!(
                f,
                "a frame of {size} bytes is over the limit of {limit} bytes"
            ),
            ReadError::Io(e) => write!(f, "channel error: {e}"),
        }
    }
}

/// Writes one frame.
pub(crate) fn write(out: &mut impl Write, kind: Kind, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a frame over 4 GiB"))?;
    let mut header = [0u8; 5];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4] = kind as u8;
    // One write for small frames: a request/reply exchange then costs one
    // system call a side.
    if len <= 4096 {
        let mut buf = Vec::with_capacity(5 + len as usize);
        buf.extend_from_slice(&header);
        for part in parts {
            buf.extend_from_slice(part);
        }
        out.write_all(&buf)?;
    } else {
        out.write_all(&header)?;
        for part in parts {
            out.write_all(part)?;
        }
    }
    out.flush()
}

/// Whether a frame can be read from `reader` without waiting longer than
/// `wait`: bytes are in its buffer, or its socket is readable (or closed:
/// a read says which). A failed `poll` is for the caller to weigh.
pub(crate) fn readable(
    reader: &io::BufReader<UnixStream>,
    wait: std::time::Duration,
) -> rustix::io::Result<bool> {
    readable_within(reader, Some(wait))
}

/// Waits, as long as it takes, until a frame can be read from `reader`
/// (or the end: a read says which). An interrupted `poll` is taken up
/// again; a failed one is for the caller to weigh.
pub(crate) fn await_readable(reader: &io::BufReader<UnixStream>) -> rustix::io::Result<()> {
    loop {
        match readable_within(reader, None) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`readable`] waiting at most `wait` (`None`: as long as it takes).
fn readable_within(
    reader: &io::BufReader<UnixStream>,
    wait: Option<std::time::Duration>,
) -> rustix::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    if !reader.buffer().is_empty() {
        return Ok(true);
    }
    let timeout = wait.map(|wait| Timespec {
        tv_sec: wait.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    });
    let mut fds = [PollFd::new(reader.get_ref(), PollFlags::IN)];
    poll(&mut fds, timeout.as_ref()).map(|n| n > 0)
}

/// Reads one frame whose body is at most `limit` bytes.
pub(crate) fn read(input: &mut impl Read, limit: usize) -> Result<(Kind, Vec<u8>), ReadError> {
    let mut header = [0u8; 5];
    let mut filled = 0;
    while filled < header.len() {
        match input.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(ReadError::Closed),
            Ok(0) => return Err(ReadError::Malformed("the channel closed mid-header".into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A peer that exits with our bytes unread resets the socket.
            Err(e) if filled == 0 && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ReadError::Closed);
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = Kind::from_u8(header[4])
        .ok_or_else(|| ReadError::Malformed(format!("unknown frame kind {}", header[4])))?;
    if len > limit {
        return Err(ReadError::TooLarge { size: len, limit });
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            ReadError::Malformed(format!("the channel closed inside a {len}-byte frame"))
        }
        _ => ReadError::Io(e),
    })?;
    Ok((kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write(&mut buf, Kind::Ask, &[b"ab", b"cd"]).unwrap();
        write(&mut buf, Kind::Done, &[]).unwrap();
        let mut input = &buf[..];
        assert_eq!(read(&mut input, 16).unwrap(), (Kind::Ask, b"abcd".to_vec()));
        assert_eq!(read(&mut input, 16).unwrap(), (Kind::Done, vec![]));
        assert!(matches!(read(&mut input, 16), Err(ReadError::Closed)));
    }

    #[test]
    fn bad_frames_are_errors() {
        // A length over the limit: refused before allocating.
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 2];
        assert!(matches!(
            read(&mut input, 1024),
            Err(ReadError::TooLarge { .. })
        ));
        // An unknown kind.
        let mut input: &[u8] = &[0, 0, 0, 0, 99];
        assert!(matches!(
            read(&mut input, 1024),
            Err(ReadError::Malformed(_))
        ));
        // A truncated body and a truncated header.
        let mut input: &[u8] = &[9, 0, 0, 0, 2, 1, 2];
        assert!(matches!(
            read(&mut input, 1024),
            Err(ReadError::Malformed(_))
        ));
        let mut input: &[u8] = &[9, 0];
        assert!(matches!(
            read(&mut input, 1024),
            Err(ReadError::Malformed(_))
        ));
    }
}
