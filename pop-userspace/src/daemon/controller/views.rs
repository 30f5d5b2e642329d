//! The controller's read views: `status`, `route show`/`get`, `stats`,
//! `acl show`, `trace`. Nothing here changes the desired state. (The metrics
//! read none of this: see [`super::publish`].)
use super::*;

impl Controller {
    /// The desired ACL rules by priority, each with its hit counter from the
    /// live copy (0 for a rule the data plane does not hold: its `in_iface`
    /// does not exist, so it matches nothing).
    pub fn acl_rules_with_hits(&self) -> Vec<AclInfo> {
        let mut acls = self.state.config.acls.clone();
        acls.sort_by_key(|a| a.priority);
        let acl = self.dp.as_ref().map(|d| &d.maps.acl);
        let hits = match acl.map(|m| m.hits(self.acl_copy)) {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                tracing::warn!("reading ACL hit counts: {e}");
                Default::default()
            }
            None => Default::default(),
        };
        acls.into_iter()
            .map(|acl| {
                let h = hits.get(&acl.priority).copied().unwrap_or_default();
                AclInfo {
                    acl,
                    hits: h.packets,
                    hit_bytes: h.bytes,
                }
            })
            .collect()
    }

    /// `status`.
    pub fn status(&self) -> StatusInfo {
        let interfaces = self
            .state
            .config
            .interfaces
            .iter()
            .map(|i| InterfaceStatus {
                name: i.name.clone(),
                ifindex: self
                    .kernel
                    .links
                    .get(&i.name)
                    .map(|l| l.ifindex)
                    .unwrap_or(0),
                role: match i.role {
                    crate::config::model::InterfaceRole::Upstream => "upstream",
                    crate::config::model::InterfaceRole::Customer => "customer",
                }
                .to_string(),
                xdp_mode: self
                    .attached
                    .get(&i.name)
                    .map(|m| m.label())
                    .unwrap_or("detached")
                    .to_string(),
            })
            .collect();
        let a = &self.applied;
        let fill = |name: &str, entries: usize, max: u32| MapFill {
            name: name.into(),
            entries: entries as u64,
            max_entries: max as u64,
        };
        use pop_common::maps as n;
        let (l4, l6) = self.learned.installed(&learned_env!(self));
        let mut maps = vec![
            fill(
                n::ROUTES_V4,
                self.state.routes.len_v4() + l4,
                pop_common::MAX_ROUTES_V4,
            ),
            fill(
                n::ROUTES_V6,
                self.state.routes.len_v6() + l6,
                pop_common::MAX_ROUTES_V6,
            ),
            fill(
                n::NEXTHOPS,
                a.nexthops.len() + self.learned.nexthop_count(),
                pop_common::MAX_NEXTHOPS,
            ),
            fill(
                n::CUST_V4,
                a.cust_v4.len(),
                pop_common::MAX_CUSTOMER_PREFIXES,
            ),
            fill(
                n::CUST_V6,
                a.cust_v6.len(),
                pop_common::MAX_CUSTOMER_PREFIXES,
            ),
            fill(n::IFACES, a.ifaces.len(), pop_common::MAX_IFACES),
            fill(n::LOCAL_V4, a.local_v4.len(), pop_common::MAX_LOCAL_ADDRS),
            fill(n::LOCAL_V6, a.local_v6.len(), pop_common::MAX_LOCAL_ADDRS),
            fill(
                n::UPPER_MACS,
                a.upper_macs.len(),
                pop_common::MAX_UPPER_MACS,
            ),
            fill(
                n::SPOOF_SRC_V4,
                a.spoof.count_v4(),
                pop_common::MAX_SPOOF_PREFIXES,
            ),
            fill(
                n::SPOOF_SRC_V6,
                a.spoof.count_v6(),
                pop_common::MAX_SPOOF_PREFIXES,
            ),
        ];
        // The IPv4 FIB the data plane looks routes up in: split /24s,
        // distinct answers and route records (ECMP groups) in use.
        if let Some(dp) = self.dp.as_ref() {
            let s = dp.maps.routes4.stats();
            maps.push(fill(
                n::FIB4_TBL8,
                s.fib.groups_used as usize,
                s.fib.group_limit,
            ));
            maps.push(fill(
                n::FIB4_RESULTS,
                s.fib.results_used as usize,
                s.fib.result_limit,
            ));
            maps.push(fill(n::FIB4_ROUTES, s.records as usize, s.record_limit));
            // The IPv6 FIB: trie nodes and route records in use.
            let s = dp.maps.routes6.stats();
            maps.push(fill(
                n::FIB6_NODES,
                s.fib.nodes_used as usize,
                s.fib.node_limit,
            ));
            maps.push(fill(n::FIB6_ROUTES, s.records as usize, s.record_limit));
        }
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            program_id: self.dp.as_ref().map(|d| d.program_id()),
            generation: self.state.generation,
            interfaces,
            maps,
        }
    }

    /// A configured route as `route show` prints it.
    pub(super) fn describe(&self, prefix: &IpNet, hops: &crate::config::routes::Hops) -> RouteInfo {
        let ifindex = self.kernel.links.get(&hops.dev).map(|l| l.ifindex);
        RouteInfo {
            prefix: prefix.to_string(),
            dev: hops.dev.clone(),
            source: "config".into(),
            blackhole: false,
            nexthops: hops
                .via
                .iter()
                .map(|ip| {
                    let mac = ifindex
                        .and_then(|i| self.kernel.neighbours.get(&(i, *ip)))
                        .and_then(|n| n.mac);
                    NexthopInfo {
                        via: ip.to_string(),
                        mac: mac.map(|m| format_mac(&m)),
                        state: if mac.is_some() {
                            "resolved"
                        } else {
                            "unresolved"
                        }
                        .into(),
                    }
                })
                .collect(),
        }
    }

    /// The configured routes, in address order (IPv4 first).
    pub(super) fn routes(&self) -> Vec<RouteInfo> {
        self.state
            .routes
            .iter()
            .map(|(p, h)| self.describe(&p, h))
            .collect()
    }

    /// `popctl trace`: runs the described packet through the trace program.
    pub(super) fn trace(&mut self, req: &TraceRequest) -> Reply {
        let link = self
            .kernel
            .links
            .get(&req.in_iface)
            .ok_or_else(|| ControlError::TraceNoDevice(req.in_iface.clone()))?;
        let ifindex = link.ifindex;
        // Addressed to the MAC the host accepts there: a tagged frame's is
        // its VLAN device's.
        let dst_mac = req
            .vlan
            .and_then(|vid| compile::vlan_device(&self.kernel, &req.in_iface, vid))
            .and_then(|dev| self.kernel.links.get(&dev))
            .map_or(link.mac, |dev| dev.mac);
        let (frame, packet) =
            crate::daemon::trace::frame(req, dst_mac).map_err(ControlError::Trace)?;
        let Some(dp) = self.dp.as_mut() else {
            return Err(ControlError::TraceNoDataplane);
        };
        let (action, rec) = dp.trace(&frame, ifindex)?;
        let ids = &self.state.ids.customers;
        let customer = |id: u32| {
            ids.iter()
                .find(|(_, v)| **v == id && id != 0)
                .map(|(name, _)| name.clone())
        };
        let forwarded = action == XDP_TX || action == XDP_REDIRECT;
        // An ICMP error goes back out of the ingress port, to the source.
        let icmp = rec
            .icmp_type
            .checked_sub(1)
            .and_then(pop_common::IcmpType::from_u32);
        let egress = self
            .kernel
            .links
            .iter()
            .find(|(_, l)| l.ifindex == rec.egress_ifindex)
            .map(|(name, _)| name.clone());
        let info = TraceInfo {
            packet: format!("{packet} in {}", req.in_iface),
            action: match action {
                XDP_DROP => "drop",
                XDP_PASS => "pass",
                XDP_TX => "tx",
                XDP_REDIRECT => "redirect",
                _ => "aborted",
            }
            .into(),
            reason: match action {
                XDP_DROP => DropReason::from_u32(rec.drop_reason).map(|r| r.label().into()),
                XDP_PASS => PassReason::from_u32(rec.pass_reason).map(|r| r.label().into()),
                _ => None,
            },
            customer_out: customer(rec.customer_out),
            customer_in: customer(rec.customer_in),
            policed_by: customer(rec.policed_customer),
            acl_rule: (rec.acl_matched == 1).then_some(rec.acl_priority),
            route: (rec.route_found == 1)
                .then(|| self.route_get(&req.dst).ok())
                .flatten()
                .and_then(|v| serde_json::from_value(v).ok()),
            egress: match icmp {
                Some(_) => Some(req.in_iface.clone()),
                None => egress,
            }
            .filter(|_| forwarded),
            nexthop_mac: (forwarded && icmp.is_none()).then(|| format_mac(&rec.dmac)),
            icmp_error: icmp.map(|k| k.label().to_string()),
            icmp_mtu: icmp
                .filter(|k| *k != pop_common::IcmpType::TimeExceeded)
                .map(|_| rec.icmp_mtu),
        };
        Ok(serde_json::to_value(info).expect("serialises"))
    }

    pub(super) fn route_get(&self, address: &str) -> Reply {
        let ip: IpAddr = address
            .parse()
            .map_err(|_| ControlError::NotAnAddress(address.to_string()))?;
        // The longest configured prefix: one lookup per length.
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let best = (0..=max).rev().find_map(|len| {
            let p = IpNet::new(ip, len).ok()?.trunc();
            self.state.routes.get(&p).map(|h| (p, h))
        });
        let learned = self.learned.lookup(ip);
        match (best, learned) {
            // A configured route wins for the same prefix; otherwise the longer one.
            (Some((p, h)), l) if l.is_none_or(|l| l.prefix_len() <= p.prefix_len()) => {
                Ok(serde_json::to_value(self.describe(&p, h)).expect("serialises"))
            }
            (_, Some(l)) => Ok(serde_json::to_value(self.learned_info(&l)).expect("serialises")),
            _ => Err(ControlError::NoRoute(ip)),
        }
    }

    /// Counters of one or all customers.
    pub fn customer_stats(&self) -> Vec<CustomerStats> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        self.state
            .config
            .customers
            .iter()
            .filter_map(|c| {
                let id = *self.state.ids.customers.get(&c.name)?;
                let record = dp.maps.customer_record(id);
                let i = record.dir[Direction::In as usize];
                let o = record.dir[Direction::Out as usize];
                let drops = DropReason::ALL
                    .iter()
                    .map(|r| (r.label().to_string(), record.drop[*r as usize].packets))
                    .filter(|(_, v)| *v > 0)
                    .collect();
                Some(CustomerStats {
                    name: c.name.clone(),
                    packets_in: i.packets,
                    bytes_in: i.bytes,
                    packets_out: o.packets,
                    bytes_out: o.bytes,
                    drops,
                })
            })
            .collect()
    }

    pub(super) fn stats(&self, customer: Option<&str>) -> Reply {
        let all = self.customer_stats();
        match customer {
            None => Ok(serde_json::to_value(all).expect("serialises")),
            Some(name) => {
                let one: Vec<_> = all.into_iter().filter(|s| s.name == name).collect();
                if one.is_empty() {
                    return Err(ControlError::NoSuchCustomer {
                        name: name.to_string(),
                    });
                }
                Ok(serde_json::to_value(one).expect("serialises"))
            }
        }
    }

    /// Host addresses (IPv4, IPv6) left out of `local_v4`/`local_v6` because
    /// they exceed its capacity.
    pub fn local_not_loaded(&self) -> (usize, usize) {
        self.local_not_loaded
    }

    /// Routes by family and source: (IPv4, IPv6) configured, (IPv4, IPv6)
    /// learned from the kernel.
    pub fn route_counts(&self) -> ((usize, usize), (usize, usize)) {
        (
            (self.state.routes.len_v4(), self.state.routes.len_v6()),
            (self.learned.len_v4(), self.learned.len_v6()),
        )
    }

    /// `route show`: configured and/or learned routes, in address order.
    pub(super) fn route_list(&self, source: Option<&str>) -> Vec<RouteInfo> {
        let mut out = Vec::new();
        if source != Some("kernel") {
            out = self.routes();
        }
        if source != Some("config") {
            let mut learned: Vec<(IpNet, RouteInfo)> = self
                .learned
                .routes()
                .map(|(p, r)| (p, self.describe_learned(&p, &r)))
                .collect();
            learned.sort_by_key(|(p, _)| (matches!(p, IpNet::V6(_)), *p));
            let mut merged = Vec::with_capacity(out.len() + learned.len());
            let mut config = out.into_iter().peekable();
            for (p, info) in learned {
                while let Some(c) = config.next_if(|c| sort_key(&c.prefix) <= sort_key_net(&p)) {
                    merged.push(c);
                }
                merged.push(info);
            }
            merged.extend(config);
            out = merged;
        }
        out
    }

    pub(super) fn learned_info(&self, prefix: &IpNet) -> RouteInfo {
        match self.learned.get(prefix) {
            Some(r) => self.describe_learned(prefix, &r),
            None => RouteInfo::default(),
        }
    }

    pub(super) fn describe_learned(
        &self,
        prefix: &IpNet,
        r: &crate::daemon::learned::LearnedRoute,
    ) -> RouteInfo {
        let dev_name = |ifindex: u32| {
            self.kernel
                .links
                .iter()
                .find(|(_, l)| l.ifindex == ifindex)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("if{ifindex}"))
        };
        RouteInfo {
            prefix: prefix.to_string(),
            dev: r
                .nexthops
                .first()
                .map(|((ifindex, _), _)| dev_name(*ifindex))
                .unwrap_or_default(),
            nexthops: r
                .nexthops
                .iter()
                .map(|((_, via), nh)| {
                    let resolved = nh.flags & pop_common::NH_RESOLVED != 0;
                    NexthopInfo {
                        via: via.to_string(),
                        mac: resolved.then(|| format_mac(&nh.dmac)),
                        state: if resolved { "resolved" } else { "unresolved" }.into(),
                    }
                })
                .collect(),
            source: "kernel".into(),
            blackhole: r.blackhole,
        }
    }
}

fn sort_key(p: &str) -> (u8, Option<IpNet>, String) {
    let net = p.parse::<IpNet>().ok();
    (matches!(net, Some(IpNet::V6(_))) as u8, net, p.to_string())
}

fn sort_key_net(p: &IpNet) -> (u8, Option<IpNet>, String) {
    (matches!(p, IpNet::V6(_)) as u8, Some(*p), p.to_string())
}

/// XDP actions as the kernel numbers them.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// "aa:bb:cc:dd:ee:ff".
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
