//! sFlow version 5 datagrams (<https://sflow.org/sflow_version_5.txt>), XDR
//! encoded: big-endian 32-bit words, opaque data padded to 4 bytes.
//!
//! pop sends two kinds of samples: flow samples (format 1) with one raw packet
//! header record (format 1, header protocol 1 = Ethernet), and counter samples
//! (format 2) with one generic interface counters record (format 1). Data
//! sources are interfaces: source id = (0 << 24) | ifIndex.
use std::net::IpAddr;

use pop_common::DropReason;

/// `output` of a flow sample whose packet was discarded: format 1 in the top
/// two bits, the reason code in the low 30 bits.
pub const OUTPUT_DISCARDED: u32 = 0x4000_0000;
/// `output` of a flow sample whose packet was delivered to the host itself
/// (format 0, the maximum value: "consumed internally").
pub const OUTPUT_INTERNAL: u32 = 0x3FFF_FFFF;
/// A 32-bit counter the agent does not know.
pub const UNKNOWN_32: u32 = u32::MAX;
/// A 64-bit counter the agent does not know.
pub const UNKNOWN_64: u64 = u64::MAX;
/// Largest datagram pop sends: fits a 1500-byte MTU with IPv6 and UDP headers.
pub const MAX_DATAGRAM_BYTES: usize = 1400;

/// sFlow v5's discard reason code for a pop drop reason: the codes sFlow
/// defines (256 unknown, 258 ACL, 261 rate limiting, 0 net unreachable) where
/// one fits, else 256.
pub fn discard_code(reason: Option<DropReason>) -> u32 {
    match reason {
        Some(DropReason::Acl) | Some(DropReason::Spoofed) => 258,
        Some(DropReason::Policed) => 261,
        Some(DropReason::NoRoute) => 0,
        _ => 256,
    }
}

/// A flow sample with one raw packet header record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSample {
    /// Incremented with each flow sample of this data source.
    pub sequence: u32,
    /// The data source: the ifIndex packets are sampled on (at ingress).
    pub source_ifindex: u32,
    /// 1 in N.
    pub sampling_rate: u32,
    /// Packets that could have been sampled on this data source.
    pub sample_pool: u32,
    /// Samples lost for lack of resources.
    pub drops: u32,
    /// Input ifIndex.
    pub input: u32,
    /// Output ifIndex, [`OUTPUT_INTERNAL`] or [`OUTPUT_DISCARDED`] | code.
    pub output: u32,
    /// Length of the frame on the wire, FCS included.
    pub frame_length: u32,
    /// Bytes removed from the end of the frame before `header` (the FCS: 4).
    pub stripped: u32,
    /// The frame's first bytes, from its Ethernet header.
    pub header: Vec<u8>,
}

/// Generic interface counters (RFC 2233 names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfCounters {
    /// ifIndex.
    pub index: u32,
    /// ifType (6: ethernetCsmacd).
    pub if_type: u32,
    /// Bits per second; 0 when unknown.
    pub speed: u64,
    /// 0 unknown, 1 full-duplex, 2 half-duplex, 3 in, 4 out.
    pub direction: u32,
    /// Bit 0 admin up, bit 1 operationally up.
    pub status: u32,
    /// ifInOctets.
    pub in_octets: u64,
    /// ifInUcastPkts.
    pub in_ucast_pkts: u32,
    /// ifInMulticastPkts.
    pub in_multicast_pkts: u32,
    /// ifInBroadcastPkts.
    pub in_broadcast_pkts: u32,
    /// ifInDiscards.
    pub in_discards: u32,
    /// ifInErrors.
    pub in_errors: u32,
    /// ifInUnknownProtos.
    pub in_unknown_protos: u32,
    /// ifOutOctets.
    pub out_octets: u64,
    /// ifOutUcastPkts.
    pub out_ucast_pkts: u32,
    /// ifOutMulticastPkts.
    pub out_multicast_pkts: u32,
    /// ifOutBroadcastPkts.
    pub out_broadcast_pkts: u32,
    /// ifOutDiscards.
    pub out_discards: u32,
    /// ifOutErrors.
    pub out_errors: u32,
    /// 1 when promiscuous.
    pub promiscuous: u32,
}

/// A counter sample with one generic interface counters record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSample {
    /// Incremented with each counter sample of this data source.
    pub sequence: u32,
    /// The data source (ifIndex).
    pub source_ifindex: u32,
    /// Its counters.
    pub counters: IfCounters,
}

/// One sample of a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sample {
    /// A sampled packet.
    Flow(FlowSample),
    /// Interface counters.
    Counter(CounterSample),
}

impl Sample {
    /// Bytes the sample takes in a datagram.
    pub fn encoded_len(&self) -> usize {
        let mut buf = Vec::with_capacity(256);
        encode_sample(&mut buf, self);
        buf.len()
    }
}

/// Bytes of a datagram's header for this agent address.
pub fn header_len(agent: &IpAddr) -> usize {
    match agent {
        IpAddr::V4(_) => 28,
        IpAddr::V6(_) => 40,
    }
}

/// The datagram header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The agent's address.
    pub agent: IpAddr,
    /// Sub-agent id (pop uses 0).
    pub sub_agent_id: u32,
    /// Incremented with each datagram.
    pub sequence: u32,
    /// Milliseconds since the agent started.
    pub uptime_ms: u32,
}

fn u32be(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn u64be(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends a record: format word, length word, body (a multiple of 4 bytes).
fn record(buf: &mut Vec<u8>, enterprise: u32, format: u32, body: impl FnOnce(&mut Vec<u8>)) {
    u32be(buf, (enterprise << 12) | format);
    let at = buf.len();
    u32be(buf, 0);
    body(buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn encode_sample(buf: &mut Vec<u8>, sample: &Sample) {
    match sample {
        Sample::Flow(f) => record(buf, 0, 1, |b| {
            u32be(b, f.sequence);
            u32be(b, f.source_ifindex & 0x00FF_FFFF);
            u32be(b, f.sampling_rate);
            u32be(b, f.sample_pool);
            u32be(b, f.drops);
            u32be(b, f.input);
            u32be(b, f.output);
            u32be(b, 1); // one flow record
            record(b, 0, 1, |r| {
                u32be(r, 1); // header protocol: Ethernet
                u32be(r, f.frame_length);
                u32be(r, f.stripped);
                u32be(r, f.header.len() as u32);
                r.extend_from_slice(&f.header);
                r.resize(r.len() + (4 - f.header.len() % 4) % 4, 0);
            });
        }),
        Sample::Counter(c) => record(buf, 0, 2, |b| {
            u32be(b, c.sequence);
            u32be(b, c.source_ifindex & 0x00FF_FFFF);
            u32be(b, 1); // one counter record
            record(b, 0, 1, |r| {
                let k = &c.counters;
                u32be(r, k.index);
                u32be(r, k.if_type);
                u64be(r, k.speed);
                u32be(r, k.direction);
                u32be(r, k.status);
                u64be(r, k.in_octets);
                for v in [
                    k.in_ucast_pkts,
                    k.in_multicast_pkts,
                    k.in_broadcast_pkts,
                    k.in_discards,
                    k.in_errors,
                    k.in_unknown_protos,
                ] {
                    u32be(r, v);
                }
                u64be(r, k.out_octets);
                for v in [
                    k.out_ucast_pkts,
                    k.out_multicast_pkts,
                    k.out_broadcast_pkts,
                    k.out_discards,
                    k.out_errors,
                    k.promiscuous,
                ] {
                    u32be(r, v);
                }
            });
        }),
    }
}

/// Encodes a datagram with these samples.
pub fn encode(header: &Header, samples: &[Sample]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MAX_DATAGRAM_BYTES);
    u32be(&mut buf, 5);
    match header.agent {
        IpAddr::V4(a) => {
            u32be(&mut buf, 1);
            buf.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            u32be(&mut buf, 2);
            buf.extend_from_slice(&a.octets());
        }
    }
    u32be(&mut buf, header.sub_agent_id);
    u32be(&mut buf, header.sequence);
    u32be(&mut buf, header.uptime_ms);
    u32be(&mut buf, samples.len() as u32);
    for s in samples {
        encode_sample(&mut buf, s);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(bytes: &[u8]) -> Vec<u32> {
        assert_eq!(bytes.len() % 4, 0, "XDR data is whole words");
        bytes
            .chunks(4)
            .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn flow_sample_datagram_has_the_sflow_v5_layout() {
        let header = Header {
            agent: "192.0.2.2".parse().unwrap(),
            sub_agent_id: 0,
            sequence: 7,
            uptime_ms: 123_456,
        };
        let flow = Sample::Flow(FlowSample {
            sequence: 3,
            source_ifindex: 4,
            sampling_rate: 1000,
            sample_pool: 5000,
            drops: 2,
            input: 4,
            output: OUTPUT_DISCARDED | discard_code(Some(DropReason::Acl)),
            frame_length: 64,
            stripped: 4,
            header: vec![0xAA, 0xBB, 0xCC, 0xDD, 0xEE],
        });
        let bytes = encode(&header, std::slice::from_ref(&flow));
        assert_eq!(bytes.len(), header_len(&header.agent) + flow.encoded_len());
        assert_eq!(
            words(&bytes),
            [
                5,           // version
                1,           // agent address type: IPv4
                0xC000_0202, // 192.0.2.2
                0,           // sub agent id
                7,           // datagram sequence
                123_456,     // uptime ms
                1,           // samples
                1,           // flow sample (enterprise 0, format 1)
                64,          // its length
                3,           // sample sequence
                4,           // source id: ifIndex 4
                1000,        // sampling rate
                5000,        // sample pool
                2,           // drops
                4,           // input
                0x4000_0102, // output: discarded, reason 258 (ACL)
                1,           // one flow record
                1,           // raw packet header (enterprise 0, format 1)
                24,          // its length
                1,           // header protocol: Ethernet
                64,          // frame length
                4,           // stripped
                5,           // header length
                0xAABB_CCDD,
                0xEE00_0000, // padded to a word
            ]
        );
    }

    #[test]
    fn counter_sample_datagram_has_the_sflow_v5_layout() {
        let header = Header {
            agent: "2001:db8::2".parse().unwrap(),
            sub_agent_id: 0,
            sequence: 1,
            uptime_ms: 10,
        };
        let counters = Sample::Counter(CounterSample {
            sequence: 9,
            source_ifindex: 2,
            counters: IfCounters {
                index: 2,
                if_type: 6,
                speed: 10_000_000_000,
                direction: 1,
                status: 3,
                in_octets: 0x1_0000_0002,
                in_ucast_pkts: 10,
                in_multicast_pkts: UNKNOWN_32,
                in_broadcast_pkts: UNKNOWN_32,
                in_discards: 1,
                in_errors: 0,
                in_unknown_protos: UNKNOWN_32,
                out_octets: 500,
                out_ucast_pkts: 5,
                out_multicast_pkts: UNKNOWN_32,
                out_broadcast_pkts: UNKNOWN_32,
                out_discards: 0,
                out_errors: 0,
                promiscuous: 0,
            },
        });
        let w = words(&encode(&header, &[counters]));
        assert_eq!(&w[..2], [5, 2]); // version, IPv6 agent
        assert_eq!(&w[2..6], [0x2001_0db8, 0, 0, 2]);
        assert_eq!(&w[6..10], [0, 1, 10, 1]); // sub agent, sequence, uptime, samples
        assert_eq!(&w[10..12], [2, 4 * 3 + 8 + 88]); // counter sample, its length
        assert_eq!(&w[12..15], [9, 2, 1]); // sequence, source id, records
        assert_eq!(&w[15..17], [1, 88]); // generic interface counters, length
        assert_eq!(
            &w[17..],
            [
                2,
                6,
                2,
                0x540B_E400,
                1,
                3, // index, type, speed (10G), direction, status
                1,
                2,
                10,
                UNKNOWN_32,
                UNKNOWN_32,
                1,
                0,
                UNKNOWN_32, // in
                0,
                500,
                5,
                UNKNOWN_32,
                UNKNOWN_32,
                0,
                0,
                0, // out, promiscuous
            ]
        );
    }
}
