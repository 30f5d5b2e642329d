//! `[[routes]]` read straight into the typed table.
//!
//! A PoP's static table can be a full table: a million `[[routes]]`, 71 MB
//! of text. Held as [`Route`] records (owned strings) they took ~200 MB
//! before validation turned them into a [`ConfiguredRoutes`] of ~20 MB.
//! [`RouteList`] takes each route as it is read, checks it on its own and
//! adds it to the table at once, so no route's text outlives its reading.
//!
//! The checks that need the rest of the config (whether a `dev` is a
//! configured interface, whether it exists in the kernel) run once per
//! distinct `dev` afterwards, and the error is still the one of the first
//! route in config order: every problem is kept with the index of the route
//! that has it, and [`RouteList::finish`] returns the earliest, with the same
//! message [`super::validate`] gives for a list of [`Route`]s.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{check_limit, check_route_text, ConfigError, Problem};
use crate::config::model::{InterfaceRole, Route};
use crate::config::routes::{ConfiguredRoutes, Hops};

/// A `dev` the routes name, with the first route naming it (for errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDev {
    /// The interface name.
    pub dev: String,
    /// The prefix of the first route via it, as written.
    pub prefix: String,
}

/// Configured routes being read: the typed table so far and the first
/// problem found.
#[derive(Debug, Default)]
pub struct RouteList {
    table: ConfiguredRoutes,
    /// Routes read (the index of the next one).
    count: usize,
    v4: usize,
    v6: usize,
    /// Each distinct `dev`, in the order of first use, with the index of
    /// its first route.
    devs: Vec<(usize, RouteDev)>,
    dev_ids: HashMap<String, u32>,
    /// Distinct (dev, gateway) pairs: each is a next hop.
    nexthops: HashSet<(u32, IpAddr)>,
    /// The first route that fails a check of its own, duplicates and the
    /// next-hop capacity included.
    error: Option<(usize, ConfigError)>,
}

impl RouteList {
    /// The routes of a list of records (a config parsed whole).
    pub fn from_routes(routes: &[Route]) -> Self {
        let mut list = Self::default();
        for r in routes {
            list.push_route(r);
        }
        list
    }

    /// Reads the next route.
    pub fn push_route(&mut self, route: &Route) {
        let via: Vec<&str> = route.via.iter().map(String::as_str).collect();
        self.push(&route.prefix, &via, &route.dev);
    }

    /// Reads the next route, given by its fields' text.
    pub fn push(&mut self, prefix: &str, via: &[&str], dev: &str) {
        let index = self.count;
        self.count += 1;
        if self.error.is_some() {
            // Only the first problem is reported; the rest is not needed.
            return;
        }
        if let Err(e) = self.add(index, prefix, via, dev) {
            self.error = Some((index, e));
            // The table is dropped: it will never be used.
            self.table = ConfiguredRoutes::default();
            self.nexthops = HashSet::new();
        }
    }

    /// Number of routes read.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no route was read.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn add(
        &mut self,
        index: usize,
        prefix: &str,
        via: &[&str],
        dev: &str,
    ) -> Result<(), ConfigError> {
        let valid = check_route_text(prefix, via, dev)?;
        let err = |problem| ConfigError::Route {
            prefix: prefix.to_string(),
            problem,
        };
        let dev_id = match self.dev_ids.get(dev) {
            Some(&id) => id,
            None => {
                let id = self.devs.len() as u32;
                self.devs.push((
                    index,
                    RouteDev {
                        dev: dev.to_string(),
                        prefix: prefix.to_string(),
                    },
                ));
                self.dev_ids.insert(dev.to_string(), id);
                id
            }
        };
        // One next-hop id per distinct (dev, via), in 1..=MAX_CONFIGURED_NEXTHOPS.
        let max_nexthops = pop_common::MAX_CONFIGURED_NEXTHOPS as usize;
        let mut full = None;
        for (text, addr) in via.iter().zip(&valid.via) {
            if self.nexthops.insert((dev_id, *addr)) && self.nexthops.len() > max_nexthops {
                full = Some(Problem::NexthopsFull {
                    via: text.to_string(),
                    count: self.nexthops.len(),
                    max: max_nexthops,
                });
                break;
            }
        }
        // Inserted before the error is known: on any error the table is
        // dropped, so one lookup serves as the duplicate check (which comes
        // before the next-hop capacity).
        let net = valid.prefix;
        let hops = Hops {
            dev: valid.dev,
            via: valid.via,
        };
        if self.table.insert(net, hops).is_some() {
            return Err(err(Problem::Duplicate("prefix")));
        }
        if let Some(problem) = full {
            return Err(err(problem));
        }
        match net {
            IpNet::V4(_) => self.v4 += 1,
            IpNet::V6(_) => self.v6 += 1,
        }
        Ok(())
    }

    /// The table, once every `dev` is known to be one of `roles`; else the
    /// error of the first route in config order that has a problem.
    pub fn finish(
        self,
        roles: &HashMap<&str, InterfaceRole>,
    ) -> Result<(ConfiguredRoutes, Vec<RouteDev>), ConfigError> {
        // Devs are in the order of their first route: the first unknown one
        // is the earliest route with an unknown dev. A route's own checks
        // come before the dev check, and duplicates and next-hop capacity
        // after it, so on the same route the unknown dev wins.
        let unknown = self
            .devs
            .iter()
            .find(|(_, d)| !roles.contains_key(d.dev.as_str()));
        match (unknown, self.error) {
            (Some((first, d)), error) if error.as_ref().is_none_or(|(i, _)| *first <= *i) => {
                return Err(ConfigError::Route {
                    prefix: d.prefix.clone(),
                    problem: Problem::UnknownInterface {
                        field: "dev",
                        value: d.dev.clone(),
                    },
                });
            }
            (_, Some((_, e))) => return Err(e),
            _ => {}
        }
        check_limit("IPv4 routes", self.v4, pop_common::MAX_ROUTES_V4)?;
        check_limit("IPv6 routes", self.v6, pop_common::MAX_ROUTES_V6)?;
        Ok((self.table, self.devs.into_iter().map(|(_, d)| d).collect()))
    }
}

/// The fields of a `[[routes]]` body written the plain way, as `popctl
/// export` and generators write it: only `prefix = "..."`, `via = ["...",
/// ...]` and `dev = "..."` lines (each once) and blank lines, strings without
/// escapes. Anything else is `None`, and `toml` reads the body, with its
/// exact messages. About ten times faster than `toml` for a route.
pub(super) fn plain_route(body: &str) -> Option<(&str, Vec<&str>, &str)> {
    let (mut prefix, mut via, mut dev) = (None, None, None);
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=')?;
        let (key, value) = (
            key.trim_end_matches([' ', '\t']),
            value.trim_start_matches([' ', '\t']),
        );
        let slot = match key {
            "prefix" => &mut prefix,
            "dev" => &mut dev,
            "via" => {
                if via.is_some() {
                    return None;
                }
                via = Some(plain_array(value)?);
                continue;
            }
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        let (s, rest) = plain_string(value)?;
        if !rest.is_empty() {
            return None;
        }
        *slot = Some(s);
    }
    Some((prefix?, via?, dev?))
}

/// A basic string without escapes at the start of `s`, and what follows it.
fn plain_string(s: &str) -> Option<(&str, &str)> {
    let s = s.strip_prefix('"')?;
    let end = s.find('"')?;
    let content = &s[..end];
    if content.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return None;
    }
    Some((content, &s[end + 1..]))
}

/// `["a", "b"]`: a one-line, non-empty array of plain strings.
fn plain_array(s: &str) -> Option<Vec<&str>> {
    let mut rest = s.strip_prefix('[')?;
    let mut out = Vec::with_capacity(1);
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        let (item, after) = plain_string(rest)?;
        out.push(item);
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
            continue;
        }
        return (rest == "]").then_some(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bodies_are_read_and_others_left_to_toml() {
        assert_eq!(
            plain_route("prefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\", \"192.0.2.2\"]\r\n\tdev=\"eth0\"\n\n"),
            Some(("10.0.0.0/8", vec!["192.0.2.1", "192.0.2.2"], "eth0"))
        );
        for body in [
            // A missing, repeated or unknown key; a comment; escapes; a
            // trailing comma; an empty array; a number; a quoted key.
            "prefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\n",
            "prefix = \"10.0.0.0/8\"\nprefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            "prefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\nmetric = 1\n",
            "prefix = \"10.0.0.0/8\" # x\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            "# x\nprefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            "prefix = \"10.0.0.0\\/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            "prefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\",]\ndev = \"eth0\"\n",
            "prefix = \"10.0.0.0/8\"\nvia = []\ndev = \"eth0\"\n",
            "prefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = 7\n",
            "\"prefix\" = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            "prefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"\ndev = \"eth0\"\n",
        ] {
            assert_eq!(plain_route(body), None, "{body}");
        }
    }
}
