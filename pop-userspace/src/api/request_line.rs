//! Reading one request line. An `apply` request carries a whole config as one
//! JSON string: tens of MB with a full table. Read the usual way, it is held
//! three times at once (the line, serde_json's unescaping scratch and the
//! value); here its escapes are undone in the line's own buffer, so the
//! config text costs its size once.
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::protocol::Request;

/// The fields of an `apply` request, the config left as JSON.
#[derive(Deserialize)]
struct ApplyLine<'a> {
    #[serde(borrow)]
    cmd: Cow<'a, str>,
    #[serde(borrow)]
    config: &'a RawValue,
    #[serde(default)]
    dry_run: bool,
}

/// The request on `line` (one JSON object, no newline).
pub fn parse_request(line: String) -> Result<Request, serde_json::Error> {
    let apply = match serde_json::from_str::<ApplyLine>(&line) {
        Ok(a) if a.cmd == "apply" && a.config.get().starts_with('"') => {
            let raw = a.config.get();
            // The string's contents, between its quotes, as a range of `line`.
            let start = raw.as_ptr() as usize - line.as_ptr() as usize + 1;
            Some((start, start + raw.len() - 2, a.dry_run))
        }
        _ => None,
    };
    let Some((start, end, dry_run)) = apply else {
        return serde_json::from_str(&line);
    };
    let mut bytes = line.into_bytes();
    let len = unescape_in_place(&mut bytes, start, end).ok_or_else(|| {
        <serde_json::Error as serde::de::Error>::custom(
            "config: invalid \\u escape (a lone UTF-16 surrogate)",
        )
    })?;
    bytes.truncate(len);
    let config = String::from_utf8(bytes).map_err(|_| {
        <serde_json::Error as serde::de::Error>::custom("config: not UTF-8 once unescaped")
    })?;
    Ok(Request::Apply { config, dry_run })
}

/// Undoes the JSON escapes of `buf[start..end]` (a string serde_json has
/// checked) and writes the result at the front of `buf`; returns its length.
/// Writing never overtakes reading: an escape is never shorter than what it
/// stands for.
fn unescape_in_place(buf: &mut [u8], start: usize, end: usize) -> Option<usize> {
    let (mut r, mut w) = (start, 0);
    let hex = |buf: &[u8], at: usize| -> Option<u32> {
        let s = std::str::from_utf8(buf.get(at..at + 4)?).ok()?;
        u32::from_str_radix(s, 16).ok()
    };
    while r < end {
        // Plain bytes up to the next backslash, in one copy.
        let run = buf[r..end]
            .iter()
            .position(|&b| b == b'\\')
            .unwrap_or(end - r);
        buf.copy_within(r..r + run, w);
        r += run;
        w += run;
        if r >= end {
            break;
        }
        let c = *buf.get(r + 1)?;
        r += 2;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut code = hex(buf, r)?;
                r += 4;
                if (0xd800..0xdc00).contains(&code) {
                    // A high surrogate: its low half follows as a second \u escape.
                    if buf.get(r..r + 2)? != b"\\u" {
                        return None;
                    }
                    let low = hex(buf, r + 2)?;
                    if !(0xdc00..0xe000).contains(&low) {
                        return None;
                    }
                    r += 6;
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                }
                let ch = char::from_u32(code)?;
                let mut tmp = [0u8; 4];
                let s = ch.encode_utf8(&mut tmp);
                buf[w..w + s.len()].copy_from_slice(s.as_bytes());
                w += s.len();
                continue;
            }
            _ => return None,
        };
        buf[w] = byte;
        w += 1;
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_line_reads_as_serde_json_reads_it() {
        for config in [
            "",
            "[[routes]]\nprefix = \"10.0.0.0/8\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            "# tab\there, quote \" backslash \\ slash / \u{8}\u{c}\r\u{1}é€😀 end",
        ] {
            for dry_run in [false, true] {
                let req = Request::Apply {
                    config: config.to_string(),
                    dry_run,
                };
                let line = serde_json::to_string(&req).unwrap();
                assert_eq!(parse_request(line).unwrap(), req);
            }
        }
        // Escapes serde_json does not write itself, fields in another order.
        let line = r#"{"dry_run":true,"config":"a\/b\u00e9\ud83d\ude00\n","cmd":"apply"}"#;
        assert_eq!(
            parse_request(line.to_string()).unwrap(),
            Request::Apply {
                config: "a/bé😀\n".into(),
                dry_run: true
            }
        );
        // A lone surrogate is refused.
        let line = r#"{"cmd":"apply","config":"a\ud83d b"}"#;
        assert!(parse_request(line.to_string()).is_err());
        // Other requests and bad lines go through serde_json as before.
        let line = serde_json::to_string(&Request::Status).unwrap();
        assert_eq!(parse_request(line).unwrap(), Request::Status);
        assert!(parse_request(r#"{"cmd":"apply"}"#.to_string()).is_err());
        assert!(parse_request(r#"{"cmd":"apply","config":7}"#.to_string()).is_err());
    }
}
