//! `Range: bytes=...` against a file of known size (RFC 9110 §14). Pure.
//! One range is honoured; several are answered with the whole file, which
//! RFC 9110 §14.2 allows (a server MAY ignore Range).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The whole file: 200.
    Full,
    /// Bytes `start..=end`: 206.
    Partial { start: u64, end: u64 },
    /// 416, with `Content-Range: bytes */size`.
    Unsatisfiable,
}

pub fn span(header: Option<&str>, size: u64) -> Span {
    let Some(h) = header else { return Span::Full };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Span::Full;
    };
    if spec.contains(',') {
        return Span::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Span::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| {
        if s.bytes().all(|c| c.is_ascii_digit()) && !s.is_empty() && s.len() <= 19 {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(b) {
            Some(0) => Span::Unsatisfiable,
            Some(_) if size == 0 => Span::Unsatisfiable,
            Some(n) => Span::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => Span::Full,
        },
        // bytes=N-: from N to the end.
        (false, true) => match parse(a) {
            Some(s) if s < size => Span::Partial {
                start: s,
                end: size - 1,
            },
            Some(_) => Span::Unsatisfiable,
            None => Span::Full,
        },
        (false, false) => match (parse(a), parse(b)) {
            (Some(s), Some(e)) if s <= e && s < size => Span::Partial {
                start: s,
                end: e.min(size - 1),
            },
            (Some(s), Some(e)) if s <= e => Span::Unsatisfiable,
            _ => Span::Full,
        },
        (true, true) => Span::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_table() {
        let cases: &[(&str, Option<&str>, u64, Span)] = &[
            ("no header", None, 100, Span::Full),
            (
                "first 10",
                Some("bytes=0-9"),
                100,
                Span::Partial { start: 0, end: 9 },
            ),
            (
                "resume",
                Some("bytes=50-"),
                100,
                Span::Partial { start: 50, end: 99 },
            ),
            (
                "suffix",
                Some("bytes=-10"),
                100,
                Span::Partial { start: 90, end: 99 },
            ),
            (
                "suffix longer than file",
                Some("bytes=-500"),
                100,
                Span::Partial { start: 0, end: 99 },
            ),
            (
                "end past size is clamped",
                Some("bytes=90-1000"),
                100,
                Span::Partial { start: 90, end: 99 },
            ),
            (
                "start at size",
                Some("bytes=100-"),
                100,
                Span::Unsatisfiable,
            ),
            (
                "start past size",
                Some("bytes=200-300"),
                100,
                Span::Unsatisfiable,
            ),
            ("zero suffix", Some("bytes=-0"), 100, Span::Unsatisfiable),
            ("empty file", Some("bytes=0-"), 0, Span::Unsatisfiable),
            (
                "backwards is invalid: ignored",
                Some("bytes=9-0"),
                100,
                Span::Full,
            ),
            (
                "multiple ranges: whole file",
                Some("bytes=0-1,5-6"),
                100,
                Span::Full,
            ),
            ("other unit", Some("items=0-1"), 100, Span::Full),
            ("garbage", Some("bytes=a-b"), 100, Span::Full),
            (
                "huge numbers",
                Some("bytes=99999999999999999999999-"),
                100,
                Span::Full,
            ),
            ("signs", Some("bytes=+1-2"), 100, Span::Full),
        ];
        for (name, h, size, want) in cases {
            assert_eq!(span(*h, *size), *want, "case {name}");
        }
    }
}
