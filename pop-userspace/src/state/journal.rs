//! The journal's on-disk format: `<state-dir>/state.journal`, a sequence of
//! framed records appended after the snapshot (`state.json`).
//!
//! A record is one `write(2)` of
//!
//! ```text
//! magic "pjr1" | payload length: u32 LE | generation: u64 LE | crc32: u32 LE | payload
//! ```
//!
//! where the CRC-32 (IEEE) covers the length, the generation and the payload,
//! and the payload is the record serialised as JSON (never empty). Each
//! record's generation is the previous one's plus one.
//!
//! Reading distinguishes two kinds of damage:
//! - a **torn tail**: the last record is short, or fails its checksum, and no
//!   valid record follows it. Each append is durable before the next one is
//!   written, so only the last write can be torn, and it was never
//!   acknowledged: it is discarded (and truncated away before the next append);
//! - **corruption**: a bad record followed by a valid one. That cannot come
//!   from a crash; it is an error naming the file and the offset, never
//!   skipped.
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::StateError;

/// Marks the start of every record (and its format version).
const MAGIC: [u8; 4] = *b"pjr1";
/// Bytes before the payload: magic, length, generation, checksum.
pub(super) const HEADER_BYTES: usize = 20;

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table-driven.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The checksum of a record: over its length, generation and payload.
fn checksum(len: u32, generation: u64, payload: &[u8]) -> u32 {
    let c = crc32_update(0, &len.to_le_bytes());
    let c = crc32_update(c, &generation.to_le_bytes());
    crc32_update(c, payload)
}

/// Fills in the header of `frame`, whose first [`HEADER_BYTES`] are reserved
/// and the rest is the payload. Fails if the payload is empty or does not fit
/// the u32 length.
pub(super) fn seal(frame: &mut [u8], generation: u64) -> Result<(), String> {
    let payload_len = frame.len() - HEADER_BYTES;
    let len = u32::try_from(payload_len)
        .map_err(|_| format!("record of {payload_len} bytes exceeds {} bytes", u32::MAX))?;
    if len == 0 {
        return Err("empty record".into());
    }
    let crc = checksum(len, generation, &frame[HEADER_BYTES..]);
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4..8].copy_from_slice(&len.to_le_bytes());
    frame[8..16].copy_from_slice(&generation.to_le_bytes());
    frame[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A parsed header: payload length, generation, checksum. None if the magic
/// is wrong or the length is zero.
fn parse_header(h: &[u8]) -> Option<(u32, u64, u32)> {
    if h[0..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let generation = u64::from_le_bytes(h[8..16].try_into().unwrap());
    let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
    (len != 0).then_some((len, generation, crc))
}

/// Whether a whole valid record starts at `bytes[0]`.
fn valid_record_at(bytes: &[u8]) -> bool {
    if bytes.len() < HEADER_BYTES {
        return false;
    }
    let Some((len, generation, crc)) = parse_header(&bytes[..HEADER_BYTES]) else {
        return false;
    };
    let end = HEADER_BYTES + len as usize;
    end <= bytes.len() && checksum(len, generation, &bytes[HEADER_BYTES..end]) == crc
}

/// The offset (in `rest`, after its first byte) of the first valid record.
fn first_valid_record_after(rest: &[u8]) -> Option<usize> {
    (1..rest.len().saturating_sub(HEADER_BYTES - 1))
        .filter(|&i| rest[i..i + 4] == MAGIC)
        .find(|&i| valid_record_at(&rest[i..]))
}

/// What a scan found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ScanEnd {
    /// Bytes of whole valid records (where the next append goes).
    pub end: u64,
    /// Number of whole valid records.
    pub records: u64,
    /// Generation of the last valid record, 0 if none.
    pub last_generation: u64,
    /// Bytes after `end` that are a torn tail (discarded).
    pub torn_bytes: u64,
}

/// Reads every record of the journal `file` (at `path`, for errors) in
/// order, calling `each(offset, generation, payload)` for each valid one.
/// A torn tail ends the scan; corruption before the tail, or generations
/// that do not increase, are [`StateError::Corrupt`] naming the offset.
pub(super) fn scan(
    path: &Path,
    file: File,
    mut each: impl FnMut(u64, u64, &[u8]) -> Result<(), StateError>,
) -> Result<ScanEnd, StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |offset: u64, why: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("record at offset {offset}: {why}"),
    };
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut at = ScanEnd::default();
    let mut header = [0u8; HEADER_BYTES];
    let mut payload = Vec::new();
    while at.end < file_len {
        let offset = at.end;
        let remaining = file_len - offset;
        // Why the record at `offset` is not valid, if it is not.
        let bad = 'check: {
            if remaining < HEADER_BYTES as u64 {
                break 'check Some(format!("{remaining} bytes, short of a header"));
            }
            reader.read_exact(&mut header).map_err(io_err)?;
            let Some((len, generation, crc)) = parse_header(&header) else {
                break 'check Some("no record header".to_string());
            };
            if u64::from(len) > remaining - HEADER_BYTES as u64 {
                break 'check Some(format!(
                    "payload of {len} bytes runs past the end of the file"
                ));
            }
            payload.resize(len as usize, 0);
            reader.read_exact(&mut payload).map_err(io_err)?;
            if checksum(len, generation, &payload) != crc {
                break 'check Some("checksum mismatch".to_string());
            }
            if at.records > 0 && Some(generation) != at.last_generation.checked_add(1) {
                return Err(corrupt(
                    offset,
                    format!(
                        "generation {generation} does not follow generation {}",
                        at.last_generation
                    ),
                ));
            }
            each(offset, generation, &payload)?;
            at.end = offset + (HEADER_BYTES + len as usize) as u64;
            at.records += 1;
            at.last_generation = generation;
            None
        };
        if let Some(why) = bad {
            // Torn (the unacknowledged last write) unless a valid record
            // follows.
            let mut file = reader.into_inner();
            file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
            let mut rest = Vec::new();
            file.read_to_end(&mut rest).map_err(io_err)?;
            if let Some(next) = first_valid_record_after(&rest) {
                return Err(corrupt(
                    offset,
                    format!(
                        "{why}, yet a valid record follows at offset {}: \
                         the journal is damaged before its end",
                        offset + next as u64
                    ),
                ));
            }
            at.torn_bytes = remaining;
            return Ok(at);
        }
    }
    Ok(at)
}

/// `io::Error` for a journal that must not be appended to until a snapshot
/// replaces it.
pub(super) fn poisoned_error(reason: &str) -> io::Error {
    io::Error::other(format!(
        "an earlier append failed and could not be undone ({reason}); \
         a snapshot must be saved before the next append"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The check value of CRC-32/ISO-HDLC for "123456789".
        assert_eq!(crc32_update(0, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_sealed_frame_is_valid_and_any_flipped_bit_is_not() {
        let mut frame = vec![0u8; HEADER_BYTES];
        frame.extend_from_slice(br#"{"route":"10.0.0.0/24"}"#);
        seal(&mut frame, 42).unwrap();
        assert!(valid_record_at(&frame));
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    !valid_record_at(&bad),
                    "flip of bit {bit} in byte {i} unnoticed"
                );
            }
        }
    }

    #[test]
    fn empty_records_are_refused() {
        let mut frame = vec![0u8; HEADER_BYTES];
        assert!(seal(&mut frame, 1).is_err());
    }
}
