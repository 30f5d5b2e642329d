//! Plain-text output for people: aligned tables with uppercase headers, in the
//! spirit of `ip -br` and `birdc`. (`-j` output is the response data as is.)
use std::io::{self, Write};

use serde::de::DeserializeOwned;

use super::CliError;
use crate::api::protocol::{
    AclInfo, ApplyInfo, CustomerStats, Request, RouteInfo, StatusInfo, TraceInfo,
};
use crate::config::model::{AclAction, Customer};

/// A table: uppercase headers and left-aligned columns two spaces apart.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header, each ending in '\n'.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn decode<T: DeserializeOwned>(
    what: &'static str,
    data: &serde_json::Value,
) -> Result<T, CliError> {
    serde_json::from_value(data.clone()).map_err(|e| CliError::BadData {
        what,
        error: e.to_string(),
    })
}

fn dash(value: Option<&String>) -> String {
    value.cloned().unwrap_or_else(|| "-".to_string())
}

/// Prints the response `data` to request `req` for people.
pub fn plain(req: &Request, data: &serde_json::Value, out: &mut dyn Write) -> Result<(), CliError> {
    let text = match req {
        Request::Status => status(&decode("status", data)?),
        Request::RouteShow { .. } => routes(&decode::<Vec<RouteInfo>>("route show", data)?),
        Request::RouteGet { .. } => routes(&[decode::<RouteInfo>("route get", data)?]),
        Request::CustomerShow => customers(&decode::<Vec<Customer>>("customer show", data)?),
        Request::AclShow => acls(&decode::<Vec<AclInfo>>("acl show", data)?),
        Request::Stats { .. } => stats(&decode::<Vec<CustomerStats>>("stats", data)?),
        Request::Apply { .. } => apply(&decode::<ApplyInfo>("apply", data)?),
        Request::Trace(_) => trace(&decode::<TraceInfo>("trace", data)?),
        Request::Export => {
            let mut text = data
                .get("config")
                .and_then(|c| c.as_str())
                .ok_or_else(|| CliError::BadData {
                    what: "export",
                    error: "no \"config\" string".to_string(),
                })?
                .to_string();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
        Request::Shutdown { detach: false } => {
            "popd is shutting down; forwarding continues\n".into()
        }
        Request::Shutdown { detach: true } => {
            "popd is shutting down and detaching the data plane\n".into()
        }
        // Mutations are silent on success, like ip(8); -j shows the generation.
        Request::RouteAdd(_)
        | Request::RouteDel { .. }
        | Request::CustomerAdd(_)
        | Request::CustomerDel { .. }
        | Request::AclAdd(_)
        | Request::AclDel { .. } => String::new(),
        // A stream, written by the capture client.
        Request::Capture(_) => String::new(),
    };
    write_all(out, &text)
}

/// Writes text, treating a closed pipe (`popctl ... | head`) as success.
pub fn write_all(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// `popctl trace`: one line per stage the packet met.
fn trace(t: &TraceInfo) -> String {
    let mut lines = vec![("packet", t.packet.clone())];
    let customers: Vec<String> = [
        t.customer_out
            .as_ref()
            .map(|c| format!("{c} (source, out)")),
        t.customer_in
            .as_ref()
            .map(|c| format!("{c} (destination, in)")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !customers.is_empty() {
        lines.push(("customers", customers.join(", ")));
    }
    if let (Some(rule), false) = (t.acl_rule, t.action == "drop") {
        lines.push(("acl", format!("allowed by rule {rule}")));
    }
    if let Some(r) = &t.route {
        let via: Vec<&str> = r.nexthops.iter().map(|n| n.via.as_str()).collect();
        lines.push((
            "route",
            format!("{} via {} dev {}", r.prefix, via.join(","), r.dev),
        ));
    }
    let reason = t.reason.as_deref().unwrap_or("?");
    let icmp = t.icmp_error.as_ref().map(|e| match t.icmp_mtu {
        Some(mtu) => format!("icmp {e} (mtu {mtu})"),
        None => format!("icmp {e}"),
    });
    let verdict = match t.action.as_str() {
        "tx" if icmp.is_some() => format!(
            "answer with {} out of {} to the source",
            icmp.as_deref().unwrap_or_default(),
            dash(t.egress.as_ref()),
        ),
        "drop" if icmp.is_some() => format!(
            "drop ({reason}: {} not sent)",
            icmp.as_deref().unwrap_or_default()
        ),
        "redirect" | "tx" => format!(
            "{} out of {} to {}",
            t.action,
            dash(t.egress.as_ref()),
            dash(t.nexthop_mac.as_ref())
        ),
        "pass" => format!("pass to the kernel ({reason})"),
        "drop" => match (&t.acl_rule, &t.policed_by) {
            (Some(rule), _) => format!("drop ({reason}, rule {rule})"),
            (None, Some(c)) if reason == "policed" => format!("drop ({reason}, {c}'s policer)"),
            _ => format!("drop ({reason})"),
        },
        other => other.to_string(),
    };
    lines.push(("verdict", verdict));
    lines.iter().map(|(k, v)| format!("{k:<10}{v}\n")).collect()
}

fn status(s: &StatusInfo) -> String {
    let mut info = Table::new(&["VERSION", "PROGRAM_ID", "GENERATION"]);
    info.row(vec![
        s.version.clone(),
        s.program_id.map_or("-".to_string(), |id| id.to_string()),
        s.generation.to_string(),
    ]);
    let mut ifaces = Table::new(&["INTERFACE", "IFINDEX", "ROLE", "XDP"]);
    for i in &s.interfaces {
        ifaces.row(vec![
            i.name.clone(),
            i.ifindex.to_string(),
            i.role.clone(),
            i.xdp_mode.clone(),
        ]);
    }
    let mut maps = Table::new(&["MAP", "ENTRIES", "MAX_ENTRIES", "FILL"]);
    for m in &s.maps {
        let fill = if m.max_entries == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", m.entries as f64 * 100.0 / m.max_entries as f64)
        };
        maps.row(vec![
            m.name.clone(),
            m.entries.to_string(),
            m.max_entries.to_string(),
            fill,
        ]);
    }
    format!("{}\n{}\n{}", info.render(), ifaces.render(), maps.render())
}

fn routes(list: &[RouteInfo]) -> String {
    let mut t = Table::new(&["PREFIX", "VIA", "DEV", "STATE", "MAC", "SOURCE"]);
    let source = |r: &RouteInfo| {
        if r.source.is_empty() {
            "-".to_string()
        } else {
            r.source.clone()
        }
    };
    for r in list {
        if r.nexthops.is_empty() {
            t.row(vec![
                r.prefix.clone(),
                if r.blackhole { "blackhole" } else { "-" }.into(),
                dash(Some(&r.dev).filter(|d| !d.is_empty())),
                "-".into(),
                "-".into(),
                source(r),
            ]);
        }
        for nh in &r.nexthops {
            t.row(vec![
                r.prefix.clone(),
                nh.via.clone(),
                r.dev.clone(),
                nh.state.clone(),
                dash(nh.mac.as_ref()),
                source(r),
            ]);
        }
    }
    t.render()
}

fn customers(list: &[Customer]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "PREFIXES",
        "INTERFACES",
        "VLAN",
        "ANTI_SPOOFING",
        "RATE_BPS",
        "BURST_BYTES",
    ]);
    for c in list {
        let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
        t.row(vec![
            c.name.clone(),
            or_dash(c.prefixes.join(",")),
            or_dash(c.interfaces.join(",")),
            c.vlan.map_or("-".into(), |v| v.to_string()),
            if c.anti_spoofing { "yes" } else { "no" }.to_string(),
            c.rate_bps.map_or("-".into(), |v| v.to_string()),
            c.burst_bytes.map_or("-".into(), |v| v.to_string()),
        ]);
    }
    t.render()
}

fn acls(list: &[AclInfo]) -> String {
    let mut t = Table::new(&[
        "PRIORITY", "ACTION", "SRC", "DST", "PROTO", "SPORT", "DPORT", "IN_IFACE", "HITS",
    ]);
    for info in list {
        let a = &info.acl;
        t.row(vec![
            a.priority.to_string(),
            match a.action {
                AclAction::Allow => "allow",
                AclAction::Drop => "drop",
            }
            .to_string(),
            dash(a.src.as_ref()),
            dash(a.dst.as_ref()),
            dash(a.proto.as_ref()),
            dash(a.src_port.as_ref()),
            dash(a.dst_port.as_ref()),
            dash(a.in_iface.as_ref()),
            info.hits.to_string(),
        ]);
    }
    t.render()
}

/// `acl=3 spoofed=1`, or `-` without drops.
pub fn drops_text(drops: &std::collections::BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = drops
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

fn stats(list: &[CustomerStats]) -> String {
    let mut t = Table::new(&[
        "CUSTOMER",
        "PKTS_IN",
        "BYTES_IN",
        "PKTS_OUT",
        "BYTES_OUT",
        "DROPS",
    ]);
    for s in list {
        t.row(vec![
            s.name.clone(),
            s.packets_in.to_string(),
            s.bytes_in.to_string(),
            s.packets_out.to_string(),
            s.bytes_out.to_string(),
            drops_text(&s.drops),
        ]);
    }
    t.render()
}

fn apply(info: &ApplyInfo) -> String {
    let mut text: String = info.changes.iter().map(|c| format!("{c}\n")).collect();
    if info.more > 0 {
        text.push_str(&format!("... and {} more change(s)\n", info.more));
    }
    if info.changes.is_empty() {
        text.push_str("no changes\n");
    }
    if info.dry_run {
        text.push_str(&format!(
            "dry run: {} change(s) not applied, generation stays {}\n",
            info.changes.len() as u64 + info.more,
            info.generation
        ));
    } else {
        text.push_str(&format!("generation {}\n", info.generation));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_huge_apply_lists_its_first_lines_and_counts_the_rest() {
        let info = ApplyInfo {
            dry_run: true,
            changes: vec!["+ route 10.0.0.0/24 via 192.0.2.1 dev eth0".into()],
            more: 999_999,
            generation: 7,
        };
        assert_eq!(
            apply(&info),
            "+ route 10.0.0.0/24 via 192.0.2.1 dev eth0\n\
             ... and 999999 more change(s)\n\
             dry run: 1000000 change(s) not applied, generation stays 7\n"
        );
        let json = serde_json::to_value(ApplyInfo { more: 0, ..info }).unwrap();
        assert!(json.get("more").is_none(), "{json}");
    }

    #[test]
    fn table_columns_start_at_the_same_offset() {
        let mut t = Table::new(&["CUSTOMER", "PKTS_IN", "DROPS"]);
        t.row(vec!["a".into(), "1234567890".into(), "-".into()]);
        t.row(vec![
            "long-customer-name".into(),
            "1".into(),
            "acl=3".into(),
        ]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("PKTS_IN").unwrap();
        assert_eq!(&lines[1][col..col + 10], "1234567890");
        assert_eq!(&lines[2][col..col + 1], "1");
        let col = lines[0].find("DROPS").unwrap();
        assert_eq!(&lines[2][col..], "acl=3");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn acl_show_has_a_hits_column_from_the_json_hits_field() {
        // What popd sends for `acl show` (and `-j` prints as is).
        let data = serde_json::json!([
            {"priority": 10, "action": "drop", "dst": "198.51.100.10/32", "hits": 42, "hit_bytes": 4200},
            {"priority": 20, "action": "allow", "hits": 0, "hit_bytes": 0}
        ]);
        let list: Vec<AclInfo> = serde_json::from_value(data.clone()).unwrap();
        assert_eq!(list[0].acl.priority, 10);
        assert_eq!(list[0].hits, 42);
        assert_eq!(serde_json::to_value(&list).unwrap(), data);
        let text = acls(&list);
        let lines: Vec<&str> = text.lines().collect();
        let col = lines[0].find("HITS").unwrap();
        assert_eq!(&lines[1][col..], "42");
        assert_eq!(&lines[2][col..], "0");
    }

    #[test]
    fn drops_list_only_nonzero_reasons() {
        let mut d = BTreeMap::new();
        assert_eq!(drops_text(&d), "-");
        d.insert("spoofed".to_string(), 1);
        d.insert("acl".to_string(), 3);
        d.insert("policed".to_string(), 0);
        assert_eq!(drops_text(&d), "acl=3 spoofed=1");
    }

    #[test]
    fn trace_shows_the_icmp_error_pop_sends() {
        let mut t = TraceInfo {
            packet: "tcp 192.0.2.5:40000 > 203.0.113.9:80 size 1400 in eth1".into(),
            action: "tx".into(),
            egress: Some("eth1".into()),
            icmp_error: Some("frag_needed".into()),
            icmp_mtu: Some(1400),
            ..TraceInfo::default()
        };
        let text = trace(&t);
        assert!(
            text.ends_with(
                "verdict   answer with icmp frag_needed (mtu 1400) out of eth1 to the source\n"
            ),
            "{text}"
        );
        t.action = "drop".into();
        t.reason = Some("icmp_rate_limited".into());
        t.icmp_error = Some("time_exceeded".into());
        t.icmp_mtu = None;
        assert!(
            trace(&t)
                .ends_with("verdict   drop (icmp_rate_limited: icmp time_exceeded not sent)\n"),
            "{}",
            trace(&t)
        );
    }
}
