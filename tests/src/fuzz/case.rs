//! A fuzz case (frame, ingress, tables) in its corpus text form, and a
//! difference between the program and the model.
use std::{fmt, rc::Rc};

use crate::model::{Desired, Outcome};

/// One frame, where it arrives, and the tables it meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Seed the tables were drawn from ([`tables`]); informative only.
    pub table_seed: u64,
    /// The tables, with the ports' ifindexes and MACs of the fuzz test
    /// (shared by the frames of a run).
    pub tables: Rc<Desired>,
    /// Ingress: 0 port A, 1 port B, 2 an interface pop does not serve.
    pub ingress: u8,
    /// The frame.
    pub frame: Vec<u8>,
}

impl Case {
    /// The corpus form: `table_seed N`, `ingress N`, `frame HEX` and
    /// `tables JSON` lines.
    pub fn to_text(&self) -> String {
        format!(
            "table_seed {}\ningress {}\nframe {}\ntables {}\n",
            self.table_seed,
            self.ingress,
            hex(&self.frame),
            serde_json::to_string(&*self.tables).expect("tables serialize")
        )
    }
    /// Parses [`Case::to_text`]; `#` lines are comments.
    pub fn parse(text: &str) -> Result<Case, String> {
        let (mut seed, mut ingress, mut frame, mut tables) = (None, None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once(' ').ok_or(format!("line {line:?}"))?;
            match k {
                "table_seed" => seed = Some(v.parse().map_err(|e| format!("{line}: {e}"))?),
                "ingress" => ingress = Some(v.parse().map_err(|e| format!("{line}: {e}"))?),
                "frame" => frame = Some(unhex(v)?),
                "tables" => {
                    tables = Some(serde_json::from_str(v).map_err(|e| format!("tables: {e}"))?)
                }
                _ => return Err(format!("unknown key {k:?}")),
            }
        }
        Ok(Case {
            table_seed: seed.ok_or("no table_seed")?,
            tables: Rc::new(tables.ok_or("no tables")?),
            ingress: ingress.ok_or("no ingress")?,
            frame: frame.ok_or("no frame")?,
        })
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("hex: {e}")))
        .collect()
}

/// A difference between the program and the model, printable as a reproduction.
#[derive(Debug)]
pub struct Difference {
    /// The case (corpus form).
    pub case: Case,
    /// What differed.
    pub what: String,
    /// The program's action and output.
    pub program: (u32, Vec<u8>),
    /// The model's answers.
    pub model: Vec<Outcome>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "program and model differ: {}", self.what)?;
        writeln!(f, "--- reproduction (tests/fuzz-corpus/NAME.case) ---")?;
        write!(f, "{}", self.case.to_text())?;
        writeln!(
            f,
            "--- program: action {} output {}",
            self.program.0,
            hex(&self.program.1)
        )?;
        for m in &self.model {
            writeln!(
                f,
                "--- model: {} action {} egress {:?} output {}\n    counters {:?}",
                m.verdict,
                m.action,
                m.egress,
                hex(&m.out),
                m.counters
            )?;
        }
        Ok(())
    }
}
