//! A fast path for reading large configs. The `toml` crate builds a document
//! tree for the whole file before deserializing it: a million `[[routes]]`
//! took 4–7 s and 2.6 GB of memory for a 71 MB file. Here the file is cut at
//! its section headers and every `[[interfaces]]`, `[[customers]]`,
//! `[[routes]]` and `[[acls]]` element is deserialized on its own (the same
//! `toml` crate and serde types, so the same rules and messages): about 1 s
//! and no memory beyond the result.
//!
//! The cut is only trusted on files whose structure it understands for sure:
//! no multi-line strings, and every line starting with `[` is one of those
//! four headers or `[dataplane]`. Anything else (dotted or quoted headers,
//! inline arrays of tables, an array value continued on a line starting with
//! `[`) returns `None` and the caller parses the whole file with `toml`.
use serde::de::DeserializeOwned;

use super::ConfigError;
use crate::config::model::Config;

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

/// The config in `text`, or `None` when the file needs the full parser.
pub fn parse(text: &str) -> Option<Result<Config, ConfigError>> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    // The root and [dataplane] keep their lines; element lines become empty
    // lines in `rest`, so its error line numbers are the file's.
    let mut rest = String::new();
    let mut all: Vec<Element> = Vec::new();
    // The element being read: (section, header line, body start).
    let mut current: Option<(Section, usize, usize)> = None;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let starts = offset;
        offset += line.len();
        if line.trim_start().starts_with('[') {
            let section = header(line)?;
            if let Some((section, header_line, body)) = current.take() {
                all.push(Element {
                    section,
                    header_line,
                    body: &text[body..starts],
                });
            }
            if section != Section::Rest {
                current = Some((section, i + 1, offset));
            }
        }
        if current.is_none() {
            rest.push_str(line);
        } else {
            rest.push('\n');
        }
    }
    if let Some((section, header_line, body)) = current {
        all.push(Element {
            section,
            header_line,
            body: &text[body..],
        });
    }

    let mut config: Config = match toml::from_str(&rest) {
        Ok(c) => c,
        Err(e) => return Some(Err(syntax(e, &rest, 1))),
    };
    // `routes = ...` in the root and [[routes]] elements: let the full
    // parser report the duplicate key.
    let has = |s| all.iter().any(|e| e.section == s);
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
        if has(Section::Routes) {
            config.routes = elements(&all, Section::Routes)?;
        }
        if has(Section::Acls) {
            config.acls = elements(&all, Section::Acls)?;
        }
        Ok(config)
    })();
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
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
