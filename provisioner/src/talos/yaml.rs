//! YAML in and out. Parsing is serde_yaml_ng's; emitting is ours, because
//! Talos parses with a YAML 1.1-minded decoder where a plain `off`, `yes` or
//! `0755` is not a string. Our emitter quotes every string that is not
//! unmistakably a string, so the node reads what we rendered.
//!
//! Output is deterministic: mappings in their insertion order (struct
//! declaration order, sorted `BTreeMap`s), two-space indents, documents
//! joined with `---`.

use serde::{Deserialize, Serialize};
pub use serde_yaml_ng::{Mapping, Value};

/// A serialisable value as a YAML tree (our own types: string keys only).
pub fn to_value<T: Serialize>(value: &T) -> Value {
    serde_yaml_ng::to_value(value).unwrap_or_else(|e| Value::String(format!("!error {e}")))
}

/// One document.
pub fn to_string<T: Serialize>(value: &T) -> String {
    let mut out = String::new();
    emit(&to_value(value), 0, &mut out);
    out
}

/// Several documents, `---` between them.
pub fn join(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| {
            let mut out = String::new();
            emit(d, 0, &mut out);
            out
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Every non-empty document of a (possibly multi-document) YAML text.
pub fn parse_all(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

const RESERVED: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "<<",
];

/// A string that every YAML 1.1 and 1.2 reader takes as this same string.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if RESERVED.contains(&s) || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    // Digits, signs and dots could start a number (ints, floats, 0x, 1_000,
    // sexagesimal 1:20, .inf): quote them all rather than guess.
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/') {
        return false;
    }
    let mut prev = ' ';
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric()
            || matches!(c, '-' | '_' | '.' | '/' | '+' | '=' | '@' | '(' | ')' | ',')
            || (c == ':' && prev != ' ')
            || (c == ' ' && prev != ':' && prev != ' ');
        if !ok {
            return false;
        }
        prev = c;
    }
    !s.contains(": ") && !s.contains(" #")
}

fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => quoted(s),
        Value::Sequence(s) if s.is_empty() => "[]".to_owned(),
        Value::Mapping(m) if m.is_empty() => "{}".to_owned(),
        Value::Tagged(t) => return scalar(&t.value),
        _ => return None,
    })
}

/// A multi-line string that a literal block (`|`) carries exactly.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.lines().all(|l| !l.ends_with([' ', '\t']))
        && !s.chars().any(|c| c.is_control() && c != '\n')
        && !s.ends_with("\n\n")
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => quoted(s),
        other => scalar(other).unwrap_or_else(|| quoted(&format!("{other:?}"))),
    }
}

/// Writes `v` as the body that follows `key:` (or `-`) at indent `indent`.
fn emit_value_after(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::String(s) if literal_ok(s) => {
            out.push_str(if s.ends_with('\n') { " |\n" } else { " |-\n" });
            for line in s.lines() {
                if !line.is_empty() {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        Value::Tagged(t) => emit_value_after(&t.value, indent, out),
        _ => match scalar(v) {
            Some(text) => {
                out.push(' ');
                out.push_str(&text);
                out.push('\n');
            }
            None => {
                out.push('\n');
                emit(v, indent + 2, out);
            }
        },
    }
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, val) in m {
                out.push_str(&pad);
                out.push_str(&key_text(k));
                out.push(':');
                emit_value_after(val, indent, out);
            }
        }
        Value::Sequence(s) if !s.is_empty() => {
            for item in s {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Mapping(m) if !m.is_empty() => {
                        // The first key on the dash line, the rest aligned under it.
                        let mut first = String::new();
                        emit(item, indent + 2, &mut first);
                        out.push(' ');
                        out.push_str(first.trim_start_matches(' '));
                    }
                    _ => emit_value_after(item, indent, out),
                }
            }
        }
        Value::Tagged(t) => emit(&t.value, indent, out),
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other).unwrap_or_default());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_are_not_unmistakably_strings_are_quoted_and_read_back() {
        let mut m = Mapping::new();
        for word in [
            "off",
            "on",
            "yes",
            "no",
            "y",
            "n",
            "true",
            "null",
            "~",
            "0x10",
            "1e3",
            "",
            "0755",
            "1:20",
            ".inf",
            "-1",
            "a: b",
            "x #y",
            "trailing ",
            "10.244.0.0/16",
            "with\"quote",
            "tab\there",
            "ünï",
            "*anchor",
            "&a",
            "!tag",
            "[x]",
            "{y}",
            "%z",
            "@w",
            "`v`",
            "|",
            ">",
        ] {
            m.insert(Value::from(word), Value::from(word));
        }
        let text = to_string(&m);
        for line in text.lines() {
            assert!(line.starts_with('"'), "key not quoted: {line}");
            let (_, v) = line.split_once("\": ").unwrap();
            assert!(v.starts_with('"'), "value not quoted: {line}");
        }
        let back: Mapping = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn nested_documents_round_trip_exactly() {
        let text = "a: 1\nb:\n  - x\n  - k: v\n    l:\n      - 2\n  - []\nc: {}\nd: |\n  line one\n\n  line three\nf: \"multi\\nline \\n\"\ng: plain value\nh: false\n";
        let v: Value = serde_yaml_ng::from_str(text).unwrap();
        let out = to_string(&v);
        assert_eq!(serde_yaml_ng::from_str::<Value>(&out).unwrap(), v, "{out}");
        assert_eq!(out, text, "stable formatting");
    }

    #[test]
    fn multi_document_round_trip() {
        let a: Value = serde_yaml_ng::from_str("a: 1\nb: [x, y]\n").unwrap();
        let b: Value = serde_yaml_ng::from_str("kind: HostnameConfig\nauto: stable\n").unwrap();
        let text = join(&[a.clone(), b.clone()]);
        assert_eq!(parse_all(&text).unwrap(), vec![a, b]);
        assert!(parse_all("a: [unclosed\n").is_err());
    }
}
