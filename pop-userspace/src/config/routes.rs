//! The configured routes as typed, compact desired state.
//!
//! A configured route is a prefix and a next-hop set (an egress device and up
//! to [`pop_common::MAX_ECMP`] gateways). A PoP's static table can be a full
//! table's size, so prefixes are integers in ordered maps and next-hop sets
//! are interned: a route costs its key and a 4-byte set id, about 20 bytes,
//! not the ~170 bytes of its text form ([`Route`]).
//!
//! The text form exists only at the edges: the config file and `popctl apply`
//! (parsed and validated whole, then converted here), `popctl export`, and the
//! state file, which stores the routes as the same `[[routes]]` records
//! ([`Serialize`]/[`Deserialize`] stream them one by one, so loading a state
//! of a million routes never holds their text all at once).
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::model::Route;
use crate::config::validate::{self, ValidRoute};

/// A next-hop set: the egress device and the gateways, in config order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hops {
    /// Egress interface.
    pub dev: String,
    /// Gateways (1..=MAX_ECMP, one family, no duplicates).
    pub via: Vec<IpAddr>,
}

/// An interned [`Hops`] with the number of routes using it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    hops: Hops,
    refs: u32,
}

/// The configured routes.
#[derive(Clone, Debug, Default)]
pub struct ConfiguredRoutes {
    v4: BTreeMap<Ipv4Net, u32>,
    v6: BTreeMap<Ipv6Net, u32>,
    slots: Vec<Option<Slot>>,
    ids: HashMap<Hops, u32>,
    free: Vec<u32>,
}

impl PartialEq for ConfiguredRoutes {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl Eq for ConfiguredRoutes {}

/// One configured route, borrowed.
pub type RouteRef<'a> = (IpNet, &'a Hops);

impl ConfiguredRoutes {
    /// The routes of a validated config.
    pub fn from_valid(routes: Vec<ValidRoute>) -> Self {
        let mut t = Self::default();
        for r in routes {
            t.insert(
                r.prefix,
                Hops {
                    dev: r.dev,
                    via: r.via,
                },
            );
        }
        t
    }

    fn intern(&mut self, hops: Hops) -> u32 {
        if let Some(&id) = self.ids.get(&hops) {
            if let Some(s) = self.slots[id as usize].as_mut() {
                s.refs += 1;
            }
            return id;
        }
        let slot = Some(Slot {
            hops: hops.clone(),
            refs: 1,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(hops, id);
        id
    }

    fn release(&mut self, id: u32) -> Hops {
        let slot = self.slots[id as usize]
            .as_mut()
            .expect("a route's hop set is interned");
        slot.refs -= 1;
        if slot.refs > 0 {
            return slot.hops.clone();
        }
        let slot = self.slots[id as usize].take().expect("checked above");
        self.ids.remove(&slot.hops);
        self.free.push(id);
        slot.hops
    }

    fn hops(&self, id: u32) -> &Hops {
        &self.slots[id as usize]
            .as_ref()
            .expect("a route's hop set is interned")
            .hops
    }

    /// Sets the route for `prefix` (host bits cleared); returns the hops it
    /// had.
    pub fn insert(&mut self, prefix: IpNet, hops: Hops) -> Option<Hops> {
        let id = self.intern(hops);
        let old = match prefix.trunc() {
            IpNet::V4(p) => self.v4.insert(p, id),
            IpNet::V6(p) => self.v6.insert(p, id),
        };
        old.map(|o| self.release(o))
    }

    /// Removes the route for `prefix`; returns its hops.
    pub fn remove(&mut self, prefix: &IpNet) -> Option<Hops> {
        let old = match prefix.trunc() {
            IpNet::V4(p) => self.v4.remove(&p),
            IpNet::V6(p) => self.v6.remove(&p),
        };
        old.map(|o| self.release(o))
    }

    /// The hops of the route for `prefix`.
    pub fn get(&self, prefix: &IpNet) -> Option<&Hops> {
        let id = match prefix.trunc() {
            IpNet::V4(p) => self.v4.get(&p),
            IpNet::V6(p) => self.v6.get(&p),
        }?;
        Some(self.hops(*id))
    }

    /// Whether an IPv4 prefix has a configured route.
    pub fn contains_v4(&self, p: &Ipv4Net) -> bool {
        self.v4.contains_key(p)
    }

    /// Whether an IPv6 prefix has a configured route.
    pub fn contains_v6(&self, p: &Ipv6Net) -> bool {
        self.v6.contains_key(p)
    }

    /// The IPv4 prefixes, in order.
    pub fn prefixes_v4(&self) -> impl Iterator<Item = &Ipv4Net> + '_ {
        self.v4.keys()
    }

    /// The IPv6 prefixes, in order.
    pub fn prefixes_v6(&self) -> impl Iterator<Item = &Ipv6Net> + '_ {
        self.v6.keys()
    }

    /// Number of IPv4 routes.
    pub fn len_v4(&self) -> usize {
        self.v4.len()
    }

    /// Number of IPv6 routes.
    pub fn len_v6(&self) -> usize {
        self.v6.len()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every route: IPv4 then IPv6, each by address then length.
    pub fn iter(&self) -> impl Iterator<Item = RouteRef<'_>> + '_ {
        self.v4
            .iter()
            .map(|(p, id)| (IpNet::V4(*p), self.hops(*id)))
            .chain(
                self.v6
                    .iter()
                    .map(|(p, id)| (IpNet::V6(*p), self.hops(*id))),
            )
    }

    /// The distinct next-hop sets in use.
    pub fn hop_sets(&self) -> impl Iterator<Item = &Hops> + '_ {
        self.slots.iter().flatten().map(|s| &s.hops)
    }

    /// The routes in their text form (`popctl export`, `[[routes]]`).
    pub fn to_routes(&self) -> Vec<Route> {
        self.iter().map(|(p, h)| route_text(&p, h)).collect()
    }

    /// What turns `self` into `new`: routes to write (new or with other
    /// hops), then prefixes to remove. Both walks are ordered merges, so the
    /// cost is the two tables' size with no allocation per unchanged route.
    pub fn delta<'a>(&'a self, new: &'a Self) -> Delta<'a> {
        let mut d = Delta::default();
        merge(&self.v4, &new.v4, |p, old, want| {
            let (old, want) = (old.map(|i| self.hops(i)), want.map(|i| new.hops(i)));
            match (old, want) {
                (_, Some(w)) if old != Some(w) => d.write.push((IpNet::V4(p), w)),
                (Some(_), None) => d.remove.push(IpNet::V4(p)),
                _ => {}
            }
        });
        merge(&self.v6, &new.v6, |p, old, want| {
            let (old, want) = (old.map(|i| self.hops(i)), want.map(|i| new.hops(i)));
            match (old, want) {
                (_, Some(w)) if old != Some(w) => d.write.push((IpNet::V6(p), w)),
                (Some(_), None) => d.remove.push(IpNet::V6(p)),
                _ => {}
            }
        });
        d
    }
}

/// The difference between two route tables ([`ConfiguredRoutes::delta`]).
#[derive(Debug, Default)]
pub struct Delta<'a> {
    /// Routes to write: new prefixes and prefixes whose hops change.
    pub write: Vec<RouteRef<'a>>,
    /// Prefixes to remove.
    pub remove: Vec<IpNet>,
}

impl Delta<'_> {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty() && self.remove.is_empty()
    }
}

/// Calls `f(key, old, new)` for every key of either map, in order.
fn merge<K: Ord + Copy>(
    old: &BTreeMap<K, u32>,
    new: &BTreeMap<K, u32>,
    mut f: impl FnMut(K, Option<u32>, Option<u32>),
) {
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some((ka, va)), None) => {
                f(**ka, Some(**va), None);
                a.next();
            }
            (None, Some((kb, vb))) => {
                f(**kb, None, Some(**vb));
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    f(**ka, Some(**va), None);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    f(**kb, None, Some(**vb));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    f(**ka, Some(**va), Some(**vb));
                    a.next();
                    b.next();
                }
            },
        }
    }
}

/// The text form of one route.
pub fn route_text(prefix: &IpNet, hops: &Hops) -> Route {
    Route {
        prefix: prefix.to_string(),
        via: hops.via.iter().map(ToString::to_string).collect(),
        dev: hops.dev.clone(),
    }
}

impl Serialize for ConfiguredRoutes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for (p, h) in self.iter() {
            seq.serialize_element(&route_text(&p, h))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ConfiguredRoutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Routes;
        impl<'de> Visitor<'de> for Routes {
            type Value = ConfiguredRoutes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of routes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut t = ConfiguredRoutes::default();
                while let Some(r) = seq.next_element::<Route>()? {
                    let v = validate::check_route(&r).map_err(serde::de::Error::custom)?;
                    let prefix = v.prefix;
                    let had = t.insert(
                        prefix,
                        Hops {
                            dev: v.dev,
                            via: v.via,
                        },
                    );
                    if had.is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "route {prefix}: listed twice"
                        )));
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_seq(Routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(dev: &str, via: &[&str]) -> Hops {
        Hops {
            dev: dev.into(),
            via: via.iter().map(|v| v.parse().unwrap()).collect(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn equal_hop_sets_are_stored_once_and_freed_with_their_last_route() {
        let mut t = ConfiguredRoutes::default();
        for i in 0..1000u32 {
            let p = IpNet::V4(Ipv4Net::new((i << 8).into(), 24).unwrap());
            t.insert(p, hops("eth0", &["192.0.2.1"]));
        }
        t.insert(net("2001:db8::/32"), hops("eth0", &["fe80::1"]));
        assert_eq!(t.hop_sets().count(), 2);
        assert_eq!(t.len(), 1001);
        assert_eq!(
            t.remove(&net("2001:db8::/32")),
            Some(hops("eth0", &["fe80::1"]))
        );
        assert_eq!(t.hop_sets().count(), 1);
        // Replacing a route's hops releases the old set.
        let old = t.insert(net("0.0.1.0/24"), hops("eth1", &["192.0.2.9"]));
        assert_eq!(old, Some(hops("eth0", &["192.0.2.1"])));
        assert_eq!(t.hop_sets().count(), 2);
        assert_eq!(
            t.get(&net("0.0.1.0/24")),
            Some(&hops("eth1", &["192.0.2.9"]))
        );
        // Host bits do not make another prefix.
        assert_eq!(
            t.get(&net("0.0.1.7/24")),
            Some(&hops("eth1", &["192.0.2.9"]))
        );
    }

    #[test]
    fn delta_lists_exactly_the_changed_routes() {
        let mut a = ConfiguredRoutes::default();
        a.insert(net("10.0.0.0/8"), hops("eth0", &["192.0.2.1"]));
        a.insert(net("10.1.0.0/16"), hops("eth0", &["192.0.2.1"]));
        a.insert(net("2001:db8::/32"), hops("eth0", &["fe80::1"]));
        let mut b = a.clone();
        assert!(a.delta(&b).is_empty());
        assert_eq!(a, b);
        b.insert(net("10.1.0.0/16"), hops("eth0", &["192.0.2.2"]));
        b.insert(net("10.2.0.0/16"), hops("eth0", &["192.0.2.1"]));
        b.remove(&net("2001:db8::/32"));
        let d = a.delta(&b);
        let write: Vec<String> = d.write.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(write, ["10.1.0.0/16", "10.2.0.0/16"]);
        assert_eq!(d.remove, [net("2001:db8::/32")]);
        assert_ne!(a, b);
    }

    #[test]
    fn the_text_form_round_trips_and_a_bad_record_is_an_error() {
        let mut t = ConfiguredRoutes::default();
        t.insert(net("10.0.0.0/8"), hops("eth0", &["192.0.2.1", "192.0.2.2"]));
        t.insert(net("2001:db8::/32"), hops("eth1", &["fe80::1"]));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"[{"prefix":"10.0.0.0/8","via":["192.0.2.1","192.0.2.2"],"dev":"eth0"},{"prefix":"2001:db8::/32","via":["fe80::1"],"dev":"eth1"}]"#
        );
        let back: ConfiguredRoutes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        let bad = r#"[{"prefix":"10.0.0.0/33","via":["192.0.2.1"],"dev":"eth0"}]"#;
        assert!(serde_json::from_str::<ConfiguredRoutes>(bad).is_err());
        let twice = r#"[{"prefix":"10.0.0.0/8","via":["192.0.2.1"],"dev":"eth0"},{"prefix":"10.0.0.0/8","via":["192.0.2.1"],"dev":"eth0"}]"#;
        let e = serde_json::from_str::<ConfiguredRoutes>(twice).unwrap_err();
        assert!(
            e.to_string().contains("route 10.0.0.0/8: listed twice"),
            "{e}"
        );
    }
}
