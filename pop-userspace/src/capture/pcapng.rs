//! A minimal pcapng writer (<https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html>):
//! one section header, one Ethernet interface description per interface
//! (nanosecond timestamps), and an enhanced packet block per packet with a
//! comment (`opt_comment`), in the host's byte order as the format allows.
use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_ne_bytes());
    body.extend_from_slice(&(value.len() as u16).to_ne_bytes());
    body.extend_from_slice(value);
    body.resize(body.len().next_multiple_of(4), 0);
}

fn block(out: &mut dyn Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_ne_bytes())?;
    out.write_all(&total.to_ne_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_ne_bytes())
}

/// Writes pcapng to `out`.
pub struct Writer<W: Write> {
    out: W,
    interfaces: Vec<String>,
}

impl<W: Write> Writer<W> {
    /// Writes the section header and one interface description per name
    /// (interface ids in this order), keeping `snaplen` bytes per packet.
    pub fn new(mut out: W, interfaces: &[String], snaplen: u32) -> io::Result<Self> {
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes());
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&u64::MAX.to_ne_bytes()); // section length unknown
        option(&mut body, SHB_USERAPPL, b"popctl capture");
        option(&mut body, OPT_END, &[]);
        block(&mut out, SHB, &body)?;
        for name in interfaces {
            let mut body = Vec::new();
            body.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
            body.extend_from_slice(&0u16.to_ne_bytes());
            body.extend_from_slice(&snaplen.to_ne_bytes());
            option(&mut body, IF_NAME, name.as_bytes());
            option(&mut body, IF_TSRESOL, &[9]); // nanoseconds
            option(&mut body, OPT_END, &[]);
            block(&mut out, IDB, &body)?;
        }
        Ok(Self {
            out,
            interfaces: interfaces.to_vec(),
        })
    }

    /// Interface id of `name` (0 when unknown).
    pub fn interface_id(&self, name: &str) -> u32 {
        self.interfaces.iter().position(|n| n == name).unwrap_or(0) as u32
    }

    /// Writes one packet: `data` is what was kept of `original_len` bytes.
    pub fn packet(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        data: &[u8],
        original_len: u32,
        comment: &str,
    ) -> io::Result<()> {
        let mut body = Vec::with_capacity(32 + data.len() + comment.len());
        body.extend_from_slice(&interface_id.to_ne_bytes());
        body.extend_from_slice(&((ts_ns >> 32) as u32).to_ne_bytes());
        body.extend_from_slice(&(ts_ns as u32).to_ne_bytes());
        body.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        body.extend_from_slice(&original_len.max(data.len() as u32).to_ne_bytes());
        body.extend_from_slice(data);
        body.resize(body.len().next_multiple_of(4), 0);
        if !comment.is_empty() {
            option(&mut body, OPT_COMMENT, comment.as_bytes());
            option(&mut body, OPT_END, &[]);
        }
        block(&mut self.out, EPB, &body)?;
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn blocks_have_the_pcapng_layout() {
        let mut w = Writer::new(Vec::new(), &["eth0".into(), "eth1".into()], 2048).unwrap();
        assert_eq!(w.interface_id("eth1"), 1);
        w.packet(1, 0x1_0000_0002, &[1, 2, 3, 4, 5], 60, "drop acl")
            .unwrap();
        let b = w.into_inner();
        // Section header: type, length (28 fixed + 20 userappl + 4 end), magic.
        assert_eq!(u32_at(&b, 0), 0x0A0D_0D0A);
        let shb = u32_at(&b, 4) as usize;
        assert_eq!(shb, 52);
        assert_eq!(u32_at(&b, 8), 0x1A2B_3C4D);
        assert_eq!(u32_at(&b, shb - 4), shb as u32);
        // Two interface descriptions.
        let mut at = shb;
        for name in ["eth0", "eth1"] {
            assert_eq!(u32_at(&b, at), 1);
            let len = u32_at(&b, at + 4) as usize;
            assert_eq!(&b[at + 8..at + 10], &1u16.to_ne_bytes()); // Ethernet
            assert_eq!(u32_at(&b, at + 12), 2048);
            assert_eq!(&b[at + 20..at + 24], name.as_bytes());
            assert_eq!(u32_at(&b, at + len - 4), len as u32);
            at += len;
        }
        // The packet: interface 1, timestamp halves, lengths, data, comment.
        assert_eq!(u32_at(&b, at), 6);
        let len = u32_at(&b, at + 4) as usize;
        assert_eq!(at + len, b.len());
        assert_eq!(
            [8, 12, 16, 20, 24].map(|o| u32_at(&b, at + o)),
            [1, 1, 2, 5, 60]
        );
        assert_eq!(&b[at + 28..at + 33], &[1, 2, 3, 4, 5]);
        assert_eq!(&b[at + 36..at + 38], &1u16.to_ne_bytes()); // opt_comment
        assert_eq!(&b[at + 40..at + 48], b"drop acl");
        assert_eq!(u32_at(&b, at + len - 4), len as u32);
    }
}
