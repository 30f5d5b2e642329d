//! A fast path for reading large configs. The `toml` crate builds a document
//! tree for the whole file before deserializing it: a million `[[routes]]`
//! took 4–7 s and 2.6 GB of memory for a 71 MB file. Here the file is cut at
//! its section headers and every `[[interfaces]]`, `[[customers]]`,
//! `[[routes]]` and `[[acls]]` element is deserialized on its own (the same
//! `toml` crate and serde types, so the same rules and messages): about 1 s
//! and no memory beyond the result.
//!
//! `[[routes]]` elements go to a [`RouteSink`] as they are read: the typed
//! table ([`super::RouteList`], popd) or a list of records (popctl, tests).
//! Plainly written routes are read without `toml` ([`super::route_list`]).
//!
//! The cut is only trusted on files whose structure it understands for sure:
//! no multi-line strings, and every line starting with `[` is one of those
//! four headers or `[dataplane]`. Anything else (dotted or quoted headers,
//! inline arrays of tables, an array value continued on a line starting with
//! `[`) returns `None` and the caller parses the whole file with `toml`.
use serde::de::DeserializeOwned;

use super::route_list::plain_route;
use super::{ConfigError, RouteList};
use crate::config::model::{Config, Route};

/// Where the `[[routes]]` elements go, one by one, in config order.
pub trait RouteSink: Default {
    /// One route, by its fields' text.
    fn push(&mut self, prefix: &str, via: &[&str], dev: &str);
    /// One route record (read by `toml`).
    fn push_route(&mut self, route: Route);
}

impl RouteSink for Vec<Route> {
    fn push(&mut self, prefix: &str, via: &[&str], dev: &str) {
        self.push(Route {
            prefix: prefix.to_string(),
            via: via.iter().map(|v| v.to_string()).collect(),
            dev: dev.to_string(),
        });
    }
    fn push_route(&mut self, route: Route) {
        Vec::push(self, route);
    }
}

impl RouteSink for RouteList {
    fn push(&mut self, prefix: &str, via: &[&str], dev: &str) {
        RouteList::push(self, prefix, via, dev);
    }
    fn push_route(&mut self, route: Route) {
        RouteList::push_route(self, &route);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    /// The root table, `[dataplane]` and `[sflow]`: parsed together as one document.
    Rest,
    Interfaces,
    Customers,
    Routes,
    Acls,
}

/// One `[[...]]` element: its kind, the 1-based line of its header, and its body.
struct Element<'a> {
    section: Section,
    header_line: usize,
    body: &'a str,
}

fn header(line: &str) -> Option<Section> {
    let t = line.trim();
    if !t.starts_with('[') {
        return None;
    }
    let t = match t.split_once('#') {
        Some((h, _)) => h.trim_end(),
        None => t,
    };
    Some(match t {
        "[dataplane]" | "[icmp]" | "[sflow]" => Section::Rest,
        "[[interfaces]]" => Section::Interfaces,
        "[[customers]]" => Section::Customers,
        "[[routes]]" => Section::Routes,
        "[[acls]]" => Section::Acls,
        _ => return None,
    })
}

fn syntax(e: toml::de::Error, text: &str, first_line: usize) -> ConfigError {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => ConfigError::Syntax {
            line: first_line + text[..span.start.min(text.len())].matches('\n').count(),
            message,
        },
        None => ConfigError::Toml(message),
    }
}

fn elements<T: DeserializeOwned>(all: &[Element], section: Section) -> Result<Vec<T>, ConfigError> {
    all.iter()
        .filter(|e| e.section == section)
        .map(|e| toml::from_str(e.body).map_err(|err| syntax(err, e.body, e.header_line + 1)))
        .collect()
}

/// Reads one `[[routes]]` element into `sink`; a syntax error is returned.
fn route_element<R: RouteSink>(
    sink: &mut R,
    body: &str,
    header_line: usize,
) -> Result<(), ConfigError> {
    if let Some((prefix, via, dev)) = plain_route(body) {
        sink.push(prefix, &via, dev);
        return Ok(());
    }
    let route: Route = toml::from_str(body).map_err(|err| syntax(err, body, header_line + 1))?;
    sink.push_route(route);
    Ok(())
}

/// The config in `text` (without routes) and its routes, or `None` when the
/// file needs the full parser.
pub fn parse<'t, R: RouteSink>(text: &'t str) -> Option<Result<(Config, R), ConfigError>> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    // The root, [dataplane], [icmp] and [sflow] lines, and the file's line
    // number of each (for error messages). Element lines are left out: as
    // blank lines (4 million with a full table) they cost `toml` seconds
    // and hundreds of MB.
    let mut rest = String::new();
    let mut rest_lines: Vec<usize> = Vec::new();
    let mut all: Vec<Element> = Vec::new();
    // The element being read: (section, header line, body start).
    let mut current: Option<(Section, usize, usize)> = None;
    let mut offset = 0;
    // Routes are read as the cut reaches them; the first syntax error among
    // them is reported after those of interfaces and customers.
    let mut routes = R::default();
    let mut has_routes = false;
    let mut route_error: Option<ConfigError> = None;
    let mut take = |e: Element<'t>, all: &mut Vec<Element<'t>>| {
        if e.section != Section::Routes {
            all.push(e);
            return;
        }
        has_routes = true;
        if route_error.is_none() {
            if let Err(err) = route_element(&mut routes, e.body, e.header_line) {
                route_error = Some(err);
            }
        }
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let starts = offset;
        offset += line.len();
        if line.trim_start().starts_with('[') {
            let section = header(line)?;
            if let Some((section, header_line, body)) = current.take() {
                take(
                    Element {
                        section,
                        header_line,
                        body: &text[body..starts],
                    },
                    &mut all,
                );
            }
            if section != Section::Rest {
                current = Some((section, i + 1, offset));
            }
        }
        if current.is_none() {
            rest.push_str(line);
            rest_lines.push(i + 1);
        }
    }
    if let Some((section, header_line, body)) = current {
        take(
            Element {
                section,
                header_line,
                body: &text[body..],
            },
            &mut all,
        );
    }

    let mut config: Config = match toml::from_str(&rest) {
        Ok(c) => c,
        Err(e) => {
            let err = syntax(e, &rest, 1);
            return Some(Err(match err {
                ConfigError::Syntax { line, message } => ConfigError::Syntax {
                    // The file's line of that line of `rest` (past its end:
                    // the line after its last).
                    line: rest_lines
                        .get(line - 1)
                        .copied()
                        .unwrap_or_else(|| rest_lines.last().map_or(1, |l| l + 1)),
                    message,
                },
                other => other,
            }));
        }
    };
    // `routes = ...` in the root and [[routes]] elements: let the full
    // parser report the duplicate key.
    let has = |s| s == Section::Routes && has_routes || all.iter().any(|e| e.section == s);
    let root: toml::Table = toml::from_str(&rest).ok()?;
    for (section, key) in [
        (Section::Interfaces, "interfaces"),
        (Section::Customers, "customers"),
        (Section::Routes, "routes"),
        (Section::Acls, "acls"),
    ] {
        if has(section) && root.contains_key(key) {
            return None;
        }
    }
    let parsed = (|| {
        if has(Section::Interfaces) {
            config.interfaces = elements(&all, Section::Interfaces)?;
        }
        if has(Section::Customers) {
            config.customers = elements(&all, Section::Customers)?;
        }
        if let Some(e) = route_error {
            return Err(e);
        }
        // Inline `routes = [...]` in the root (no [[routes]] elements).
        for r in std::mem::take(&mut config.routes) {
            routes.push_route(r);
        }
        if has(Section::Acls) {
            config.acls = elements(&all, Section::Acls)?;
        }
        Ok((config, routes))
    })();
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    /// The fast path with the routes as records in the config.
    fn parse(text: &str) -> Option<Result<Config, ConfigError>> {
        super::parse::<Vec<Route>>(text).map(|r| {
            r.map(|(mut c, routes)| {
                c.routes = routes;
                c
            })
        })
    }

    const CONFIG: &str = r#"# a comment
[dataplane]
no_route = "drop"

[[interfaces]]   # upstream
name = "eth0"
role = "upstream"

[[interfaces]]
name = "eth1"
role = "customer"

[[customers]]
name = "acme"
prefixes = [
  "198.51.100.0/24",
  "2001:db8:a::/48",
]
interfaces = ["eth1"]
rate_bps = 1000000

[[routes]]
prefix = "0.0.0.0/0"
via = ["192.0.2.1", "192.0.2.2"]
dev = "eth0"

  [[routes]]
  prefix = "10.0.0.0/8"
  via = ["192.0.2.1"]
  dev = "eth0"

[[acls]]
priority = 100
action = "drop"
dst_port = "22"
"#;

    #[test]
    fn same_config_as_the_full_parser() {
        let fast = parse(CONFIG).expect("fast path taken").unwrap();
        assert_eq!(fast, full(CONFIG).unwrap());
        assert_eq!(fast.routes.len(), 2);
        assert_eq!(fast.customers[0].prefixes.len(), 2);
        // What popctl export prints reads back through the fast path.
        let exported = crate::config::validate::to_toml(&fast);
        assert_eq!(parse(&exported).expect("fast path taken").unwrap(), fast);
        // A file without elements, and an empty one.
        let small = "[dataplane]\nno_route = \"pass\"\n";
        assert_eq!(parse(small).unwrap().unwrap(), full(small).unwrap());
        assert_eq!(parse("").unwrap().unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_files_line() {
        let bad = CONFIG.replace("dev = \"eth0\"\n\n[[acls]]", "dev = 7\n\n[[acls]]");
        let line = bad.lines().position(|l| l.contains("dev = 7")).unwrap() + 1;
        match parse(&bad).expect("fast path taken") {
            Err(ConfigError::Syntax { line: l, message }) => {
                assert_eq!(l, line, "{message}");
                assert!(message.contains("string"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let bad = CONFIG.replace("name = \"eth1\"", "nmae = \"eth1\"");
        let line = bad.lines().position(|l| l.contains("nmae")).unwrap() + 1;
        match parse(&bad).expect("fast path taken") {
            Err(ConfigError::Syntax { line: l, message }) => {
                assert_eq!(l, line);
                assert!(message.contains("unknown field `nmae`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let bad = CONFIG.replace("no_route = \"drop\"", "no_route = \"maybe\"");
        match parse(&bad).expect("fast path taken") {
            Err(ConfigError::Syntax { line: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unusual_files_go_to_the_full_parser() {
        // Inline arrays of tables alone are just part of the root document.
        let inline =
            "routes = [{ prefix = \"10.0.0.0/8\", via = [\"192.0.2.1\"], dev = \"eth0\" }]\n";
        assert_eq!(parse(inline).unwrap().unwrap(), full(inline).unwrap());
        for text in [
            // Both forms: the full parser reports the duplicate.
            "routes = []\n[[routes]]\nprefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            // Quoted and dotted headers.
            "[[\"routes\"]]\nprefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            "[dataplane.x]\n",
            // A multi-line string could hide a header.
            "[[customers]]\nname = \"\"\"\n[[routes]]\n\"\"\"\n",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
    }
}
