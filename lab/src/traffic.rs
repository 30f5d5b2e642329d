//! Reading what traffic tools report.
use anyhow::{Context, Result};

/// Packet counts from ping's summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u64,
    /// Echo replies received.
    pub received: u64,
}

impl PingStats {
    /// Parses iputils ping output ("10 packets transmitted, 9 received, ...").
    pub fn parse(output: &str) -> Result<PingStats> {
        let line = output
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .with_context(|| format!("no summary line in ping output: {output:?}"))?;
        let number_before = |word: &str| -> Result<u64> {
            let words: Vec<&str> = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .collect();
            let pos = words
                .iter()
                .position(|w| *w == word)
                .with_context(|| format!("no {word:?} in {line:?}"))?;
            words[..pos]
                .iter()
                .rev()
                .find(|w| !w.is_empty())
                .and_then(|w| w.parse().ok())
                .with_context(|| format!("no count before {word:?} in {line:?}"))
        };
        Ok(PingStats {
            transmitted: number_before("packets")?,
            received: number_before("received")?,
        })
    }

    /// Requests without a reply.
    pub fn lost(&self) -> u64 {
        self.transmitted.saturating_sub(self.received)
    }
}

impl std::fmt::Display for PingStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent, {} received, {} lost",
            self.transmitted,
            self.received,
            self.lost()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_summary() {
        let out = "PING 100.64.0.1 (100.64.0.1) 56(84) bytes of data.\n\n--- 100.64.0.1 ping statistics ---\n\
                   120 packets transmitted, 119 received, 0.833333% packet loss, time 6003ms\n";
        assert_eq!(
            PingStats::parse(out).unwrap(),
            PingStats {
                transmitted: 120,
                received: 119
            }
        );
    }

    #[test]
    fn parses_summary_with_errors() {
        let out = "10 packets transmitted, 0 received, +10 errors, 100% packet loss, time 9ms\n";
        let stats = PingStats::parse(out).unwrap();
        assert_eq!(stats.lost(), 10);
    }

    #[test]
    fn rejects_output_without_summary() {
        assert!(PingStats::parse("ping: connect: Network is unreachable\n").is_err());
    }
}
