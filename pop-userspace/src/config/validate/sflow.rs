//! The `[sflow]` section: collectors, sampling rate, polling interval and
//! agent address, each checked with an error naming the field and its limit.
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::config::model::SflowConfig;

/// Highest `sampling_rate`: the data plane draws skips in [1, 2N-1] as u32.
pub const MAX_SAMPLING_RATE: u64 = (1 << 31) - 1;
/// Highest `polling_interval` in seconds (one hour).
pub const MAX_POLLING_INTERVAL: u64 = 3600;
/// Most collectors a PoP sends to.
pub const MAX_COLLECTORS: usize = 8;

/// What is wrong with `[sflow]`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SflowError {
    /// No collector.
    #[error("collectors is empty (give at least one \"ip:port\")")]
    NoCollectors,
    /// More than [`MAX_COLLECTORS`].
    #[error("{0} collectors exceed the maximum of {MAX_COLLECTORS}")]
    TooManyCollectors(usize),
    /// A collector that is not `ip:port`.
    #[error("collector {0:?}: not an address \"ip:port\" (\"[ipv6]:port\" for IPv6)")]
    CollectorSyntax(String),
    /// Port 0 or an unspecified/multicast address.
    #[error("collector {0:?}: {1}")]
    CollectorAddress(String, &'static str),
    /// The same collector twice.
    #[error("collector {0:?} listed twice")]
    CollectorTwice(String),
    /// `sampling_rate` out of range.
    #[error("sampling_rate {0} out of range 1-{MAX_SAMPLING_RATE}")]
    SamplingRate(u64),
    /// `polling_interval` out of range.
    #[error("polling_interval {0} out of range 0-{MAX_POLLING_INTERVAL} (seconds; 0 turns counter samples off)")]
    PollingInterval(u64),
    /// `agent_address` not an address.
    #[error("agent_address {0:?}: not a unicast IP address")]
    AgentAddress(String),
}

/// A checked `[sflow]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidSflow {
    /// Where datagrams go, in config order.
    pub collectors: Vec<SocketAddr>,
    /// 1 in N packets.
    pub sampling_rate: u32,
    /// Seconds between counter samples; 0: none.
    pub polling_interval: u32,
    /// As configured; `None`: the first address of the first upstream interface.
    pub agent_address: Option<IpAddr>,
}

/// Checks `[sflow]`.
pub fn check_sflow(s: &SflowConfig) -> Result<ValidSflow, SflowError> {
    if s.collectors.is_empty() {
        return Err(SflowError::NoCollectors);
    }
    if s.collectors.len() > MAX_COLLECTORS {
        return Err(SflowError::TooManyCollectors(s.collectors.len()));
    }
    let mut collectors: Vec<SocketAddr> = Vec::with_capacity(s.collectors.len());
    for text in &s.collectors {
        let addr: SocketAddr = text
            .trim()
            .parse()
            .map_err(|_| SflowError::CollectorSyntax(text.clone()))?;
        if addr.port() == 0 {
            return Err(SflowError::CollectorAddress(text.clone(), "port 0"));
        }
        if addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(SflowError::CollectorAddress(
                text.clone(),
                "not a unicast address",
            ));
        }
        if collectors.contains(&addr) {
            return Err(SflowError::CollectorTwice(text.clone()));
        }
        collectors.push(addr);
    }
    if !(1..=MAX_SAMPLING_RATE).contains(&s.sampling_rate) {
        return Err(SflowError::SamplingRate(s.sampling_rate));
    }
    if s.polling_interval > MAX_POLLING_INTERVAL {
        return Err(SflowError::PollingInterval(s.polling_interval));
    }
    let agent_address = match &s.agent_address {
        None => None,
        Some(text) => {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| SflowError::AgentAddress(text.clone()))?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(SflowError::AgentAddress(text.clone()));
            }
            Some(ip)
        }
    };
    Ok(ValidSflow {
        collectors,
        sampling_rate: s.sampling_rate as u32,
        polling_interval: s.polling_interval as u32,
        agent_address,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::validate::{parse_config, to_toml, validate};

    const SECTION: &str = "[sflow]\ncollectors = [\"192.0.2.50:6343\", \"[2001:db8::50]:6343\"]\nsampling_rate = 1000\npolling_interval = 20\nagent_address = \"192.0.2.2\"\n";

    fn rejected(text: &str) -> String {
        let cfg = parse_config(text).expect("parses");
        validate(&cfg).unwrap_err().to_string()
    }

    #[test]
    fn a_full_section_parses_validates_and_exports() {
        let cfg = parse_config(SECTION).unwrap();
        let valid = validate(&cfg).unwrap().sflow.unwrap();
        assert_eq!(valid.collectors.len(), 2);
        assert_eq!(valid.sampling_rate, 1000);
        assert_eq!(valid.polling_interval, 20);
        assert_eq!(valid.agent_address, Some("192.0.2.2".parse().unwrap()));
        let exported = to_toml(&cfg);
        assert!(exported.contains("[sflow]"), "{exported}");
        assert_eq!(parse_config(&exported).unwrap(), cfg);
        // Defaults: rate 1000, counters every 20 s, agent address derived.
        let cfg = parse_config("[sflow]\ncollectors = [\"127.0.0.1:6343\"]\n").unwrap();
        let valid = validate(&cfg).unwrap().sflow.unwrap();
        assert_eq!((valid.sampling_rate, valid.polling_interval), (1000, 20));
        assert_eq!(valid.agent_address, None);
    }

    #[test]
    fn bad_values_name_the_field_and_the_limit() {
        let with = |from: &str, to: &str| {
            let text = SECTION.replace(from, to);
            assert_ne!(text, SECTION, "{from}");
            rejected(&text)
        };
        assert_eq!(
            with("sampling_rate = 1000", "sampling_rate = 0"),
            "sflow: sampling_rate 0 out of range 1-2147483647"
        );
        assert_eq!(
            with("sampling_rate = 1000", "sampling_rate = 4294967296"),
            "sflow: sampling_rate 4294967296 out of range 1-2147483647"
        );
        assert_eq!(
            with("polling_interval = 20", "polling_interval = 3601"),
            "sflow: polling_interval 3601 out of range 0-3600 (seconds; 0 turns counter samples off)"
        );
        assert_eq!(
            with("\"192.0.2.50:6343\"", "\"192.0.2.50\""),
            "sflow: collector \"192.0.2.50\": not an address \"ip:port\" (\"[ipv6]:port\" for IPv6)"
        );
        assert_eq!(
            with("\"192.0.2.50:6343\"", "\"192.0.2.50:0\""),
            "sflow: collector \"192.0.2.50:0\": port 0"
        );
        assert_eq!(
            with("\"[2001:db8::50]:6343\"", "\"192.0.2.50:6343\""),
            "sflow: collector \"192.0.2.50:6343\" listed twice"
        );
        assert_eq!(
            with(
                "collectors = [\"192.0.2.50:6343\", \"[2001:db8::50]:6343\"]",
                "collectors = []"
            ),
            "sflow: collectors is empty (give at least one \"ip:port\")"
        );
        assert_eq!(
            with("\"192.0.2.2\"", "\"eth0\""),
            "sflow: agent_address \"eth0\": not a unicast IP address"
        );
        // A polling interval of 0 turns counter samples off.
        let off = parse_config(&SECTION.replace("polling_interval = 20", "polling_interval = 0"));
        assert_eq!(
            validate(&off.unwrap())
                .unwrap()
                .sflow
                .unwrap()
                .polling_interval,
            0
        );
    }

    #[test]
    fn apply_lists_the_section_change() {
        use crate::config::diff::diff;
        let with = parse_config(SECTION).unwrap();
        let without = parse_config("").unwrap();
        assert_eq!(
            diff(&without, &with),
            ["+ sflow to 192.0.2.50:6343,[2001:db8::50]:6343 sampling_rate 1000 polling_interval 20 agent_address 192.0.2.2"]
        );
        let mut faster = with.clone();
        faster.sflow.as_mut().unwrap().sampling_rate = 100;
        assert_eq!(diff(&with, &faster).len(), 1);
        assert!(diff(&with, &faster)[0].starts_with("~ sflow to "));
        assert!(diff(&with, &without)[0].starts_with("- sflow to "));
        assert!(diff(&with, &with).is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err = parse_config(&format!("{SECTION}sampling = 5\n")).unwrap_err();
        assert_eq!(err.to_string().split(':').next(), Some("config line 6"));
        assert!(
            err.to_string().contains("unknown field `sampling`"),
            "{err}"
        );
    }
}
