//! Fixture files: one machine's inventory sources as one reviewable text file,
//! and a [`Source`] that answers from it.
//!
//! Format (line oriented, UTF-8; `capture.sh` writes it with busybox tools):
//!
//! ```text
//! # inventory fixture v1                       first line, exactly
//! # any other line starting with '#' is a comment; blank lines are ignored
//! D /sys/firmware/efi                          something exists here (directory, device node)
//! L /sys/block/vda -> ../devices/pci0000:00/0000:00:04.0/virtio1/block/vda
//! T /sys/class/dmi/id/sys_vendor               text file ending in "\n"; its lines follow, each behind '|'
//! |QEMU
//! t /sys/block/vda/serial                      text file with no final "\n"
//! |vd-serial
//! B /sys/firmware/dmi/tables/DMI               any other file; hex follows on lines behind ':'
//! :0001180000000000...                         (whitespace inside hex lines is ignored)
//! ```
//!
//! Text files are those made only of tab, newline and printable ASCII, so
//! every byte round-trips. Paths are stored as the collectors ask for them,
//! never resolved: `/sys/block/vda/size` is its own entry next to the
//! `/sys/block/vda` link. Listing a directory yields the next path component
//! of every entry below it.
//!
//! [`Recorder`] wraps another source and writes down every answer it gives,
//! so the agent can capture exactly what `collect` read on a machine.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::source::Source;

/// First line of every fixture.
pub const HEADER: &str = "# inventory fixture v1";

/// Bytes per hex line when rendering.
const HEX_LINE_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("reading fixture {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the first line is not {HEADER:?}")]
    MissingHeader,
    #[error("line {line}: unknown entry {text:?}")]
    UnknownEntry { line: usize, text: String },
    #[error("line {line}: content line outside a file of its kind")]
    StrayContent { line: usize },
    #[error("line {line}: invalid hex")]
    BadHex { line: usize },
    #[error("line {line}: path {path:?} is not absolute")]
    RelativePath { line: usize, path: String },
    #[error("line {line}: path {path:?} appears twice")]
    Duplicate { line: usize, path: String },
}

/// One stored path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(Vec<u8>),
    Link(String),
    /// A directory or any other node that is neither a file nor a link.
    Dir,
}

/// A captured machine: path -> entry, plus the comments of its header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fixture {
    pub comments: Vec<String>,
    pub entries: BTreeMap<String, Entry>,
}

/// A file entry being read: its kind and the content lines seen so far.
enum Open {
    Text {
        path: String,
        final_newline: bool,
        lines: Vec<String>,
    },
    Binary {
        path: String,
        bytes: Vec<u8>,
    },
}

impl Fixture {
    /// Reads and parses a fixture file.
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses fixture text (see the module docs for the format).
    pub fn parse(text: &str) -> Result<Self, FixtureError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, first)) if first.trim_end() == HEADER => {}
            _ => return Err(FixtureError::MissingHeader),
        }
        let mut fx = Fixture::default();
        let mut open: Option<Open> = None;
        for (line, raw) in lines {
            if let Some(content) = raw.strip_prefix('|') {
                match &mut open {
                    Some(Open::Text { lines, .. }) => lines.push(content.to_string()),
                    _ => return Err(FixtureError::StrayContent { line }),
                }
                continue;
            }
            if let Some(hex) = raw.strip_prefix(':') {
                match &mut open {
                    Some(Open::Binary { bytes, .. }) => {
                        decode_hex_into(hex, bytes).ok_or(FixtureError::BadHex { line })?;
                    }
                    _ => return Err(FixtureError::StrayContent { line }),
                }
                continue;
            }
            if let Some(done) = open.take() {
                fx.finish(done, line)?;
            }
            if raw.trim().is_empty() {
                continue;
            }
            if let Some(comment) = raw.strip_prefix('#') {
                if fx.entries.is_empty() {
                    fx.comments
                        .push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
                }
                continue;
            }
            let unknown = || FixtureError::UnknownEntry {
                line,
                text: raw.to_string(),
            };
            let (tag, rest) = raw.split_once(' ').ok_or_else(unknown)?;
            match tag {
                "D" => fx.add(line, rest, Entry::Dir)?,
                "L" => {
                    let (path, target) = rest.split_once(" -> ").ok_or_else(unknown)?;
                    fx.add(line, path, Entry::Link(target.to_string()))?;
                }
                "T" | "t" => {
                    check_path(line, rest)?;
                    open = Some(Open::Text {
                        path: rest.to_string(),
                        final_newline: tag == "T",
                        lines: Vec::new(),
                    });
                }
                "B" => {
                    check_path(line, rest)?;
                    open = Some(Open::Binary {
                        path: rest.to_string(),
                        bytes: Vec::new(),
                    });
                }
                _ => return Err(unknown()),
            }
        }
        if let Some(done) = open.take() {
            fx.finish(done, text.lines().count())?;
        }
        Ok(fx)
    }

    fn finish(&mut self, open: Open, line: usize) -> Result<(), FixtureError> {
        match open {
            Open::Text {
                path,
                final_newline,
                lines,
            } => {
                let mut content = lines.join("\n");
                if final_newline && !lines.is_empty() {
                    content.push('\n');
                }
                self.add(line, &path, Entry::File(content.into_bytes()))
            }
            Open::Binary { path, bytes } => self.add(line, &path, Entry::File(bytes)),
        }
    }

    fn add(&mut self, line: usize, path: &str, entry: Entry) -> Result<(), FixtureError> {
        check_path(line, path)?;
        if self.entries.insert(path.to_string(), entry).is_some() {
            return Err(FixtureError::Duplicate {
                line,
                path: path.to_string(),
            });
        }
        Ok(())
    }

    /// A fixture holding the given files (for tests and hand-made cases).
    pub fn from_files(files: &[(&str, &[u8])]) -> Self {
        let mut fx = Fixture::default();
        for (path, bytes) in files {
            fx.entries
                .insert((*path).to_string(), Entry::File(bytes.to_vec()));
        }
        fx
    }

    /// Adds or replaces one entry.
    pub fn insert(&mut self, path: &str, entry: Entry) {
        self.entries.insert(path.to_string(), entry);
    }

    /// The fixture as text; `parse(render(f)) == f` for every fixture whose
    /// paths contain no newline or " -> ".
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(HEADER);
        out.push('\n');
        for c in &self.comments {
            // Comments are single lines; a newline inside one would start a new entry.
            let _ = writeln!(out, "# {}", c.replace('\n', " "));
        }
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir => {
                    let _ = writeln!(out, "D {path}");
                }
                Entry::Link(target) => {
                    let _ = writeln!(out, "L {path} -> {target}");
                }
                Entry::File(bytes) if is_text(bytes) => {
                    let (body, tag) = match bytes.strip_suffix(b"\n") {
                        Some(body) => (body, 'T'),
                        None => (&bytes[..], 't'),
                    };
                    let _ = writeln!(out, "{tag} {path}");
                    if !bytes.is_empty() {
                        // is_text guarantees ASCII, so this never replaces anything.
                        for l in String::from_utf8_lossy(body).split('\n') {
                            let _ = writeln!(out, "|{l}");
                        }
                    }
                }
                Entry::File(bytes) => {
                    let _ = writeln!(out, "B {path}");
                    for chunk in bytes.chunks(HEX_LINE_BYTES) {
                        out.push(':');
                        for b in chunk {
                            let _ = write!(out, "{b:02x}");
                        }
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

/// Text mode holds tab, newline and printable ASCII only; anything else is hex.
/// An empty file is text ("t" with no lines); so is "\n" ("T" with one empty line).
fn is_text(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b == b'\t' || b == b'\n' || (0x20..0x7f).contains(&b))
}

fn check_path(line: usize, path: &str) -> Result<(), FixtureError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(FixtureError::RelativePath {
            line,
            path: path.to_string(),
        })
    }
}

fn decode_hex_into(hex: &str, out: &mut Vec<u8>) -> Option<()> {
    let digits: Vec<u8> = hex
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| (b as char).to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    out.extend(digits.chunks_exact(2).map(|p| match p {
        [hi, lo] => hi << 4 | lo,
        _ => 0, // chunks_exact(2) yields pairs only
    }));
    Some(())
}

impl Source for Fixture {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        match self.entries.get(path)? {
            Entry::File(bytes) => Some(bytes.clone()),
            _ => None,
        }
    }

    fn read_link(&self, path: &str) -> Option<String> {
        match self.entries.get(path)? {
            Entry::Link(target) => Some(target.clone()),
            _ => None,
        }
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(&prefix))
            .filter_map(|p| p.get(prefix.len()..)?.split('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        names.dedup(); // sorted by the map, so equal names are adjacent
        names
    }

    fn exists(&self, path: &str) -> bool {
        self.entries.contains_key(path) || !self.list(path).is_empty()
    }
}

/// A [`Source`] that forwards to another and writes every answer down.
pub struct Recorder<'a> {
    inner: &'a dyn Source,
    seen: RefCell<Fixture>,
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a dyn Source) -> Self {
        Self {
            inner,
            seen: RefCell::new(Fixture::default()),
        }
    }

    /// What was read, as a fixture with the given header comments.
    pub fn into_fixture(self, comments: Vec<String>) -> Fixture {
        let mut fx = self.seen.into_inner();
        fx.comments = comments;
        fx
    }

    fn note(&self, path: &str, entry: Entry) {
        let mut seen = self.seen.borrow_mut();
        // A directory marker never replaces a file or link seen at the same path.
        if entry == Entry::Dir && seen.entries.contains_key(path) {
            return;
        }
        seen.insert(path, entry);
    }
}

impl Source for Recorder<'_> {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let got = self.inner.read(path)?;
        self.note(path, Entry::File(got.clone()));
        Some(got)
    }

    fn read_link(&self, path: &str) -> Option<String> {
        let got = self.inner.read_link(path)?;
        self.note(path, Entry::Link(got.clone()));
        Some(got)
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let got = self.inner.list(dir);
        if self.inner.exists(dir) {
            self.note(dir, Entry::Dir);
        }
        // Every name must come back when the fixture is listed, also those
        // the collector then skips without reading anything under them.
        let base = dir.trim_end_matches('/');
        for name in &got {
            self.note(&format!("{base}/{name}"), Entry::Dir);
        }
        got
    }

    fn exists(&self, path: &str) -> bool {
        let got = self.inner.exists(path);
        if got {
            self.note(path, Entry::Dir);
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_entry_kind() {
        let text = "# inventory fixture v1\n# host: test\n\nD /sys/firmware/efi\n\
                    L /sys/block/vda -> ../devices/virtio1/block/vda\n\
                    T /a\n|line one\n|\n|line three\nt /b\n|no newline\nT /empty-line\n|\n\
                    t /empty\nB /bin\n:00ff 10\n:  7f\n";
        let fx = Fixture::parse(text).unwrap();
        assert_eq!(fx.comments, vec!["host: test"]);
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("/a", Some(b"line one\n\nline three\n")),
            ("/b", Some(b"no newline")),
            ("/empty-line", Some(b"\n")),
            ("/empty", Some(b"")),
            ("/bin", Some(&[0x00, 0xff, 0x10, 0x7f])),
            ("/sys/block/vda", None),
            ("/sys/firmware/efi", None),
        ];
        for (path, want) in cases {
            assert_eq!(fx.read(path).as_deref(), *want, "case {path}");
        }
        assert_eq!(
            fx.read_link("/sys/block/vda").as_deref(),
            Some("../devices/virtio1/block/vda")
        );
        assert_eq!(fx.list("/sys"), vec!["block", "firmware"]);
        assert_eq!(fx.list("/sys/"), vec!["block", "firmware"]);
        assert!(fx.exists("/sys/firmware/efi"));
        assert!(fx.exists("/sys/firmware"));
        assert!(!fx.exists("/sys/firm"));
    }

    #[test]
    fn rejects_malformed_fixtures() {
        let cases: &[(&str, &str)] = &[
            ("no header", "D /x\n"),
            ("empty", ""),
            ("unknown tag", "# inventory fixture v1\nX /x\n"),
            ("no space", "# inventory fixture v1\nD\n"),
            ("stray text", "# inventory fixture v1\n|x\n"),
            ("hex in text", "# inventory fixture v1\nT /x\n:00\n"),
            ("text in hex", "# inventory fixture v1\nB /x\n|00\n"),
            ("odd hex", "# inventory fixture v1\nB /x\n:0\n"),
            ("bad hex", "# inventory fixture v1\nB /x\n:zz\n"),
            ("relative", "# inventory fixture v1\nD sys\n"),
            ("link without arrow", "# inventory fixture v1\nL /x y\n"),
            ("duplicate", "# inventory fixture v1\nD /x\nT /x\n|a\n"),
        ];
        for (name, text) in cases {
            assert!(Fixture::parse(text).is_err(), "case {name} should fail");
        }
    }

    #[test]
    fn render_round_trips() {
        let mut fx = Fixture::from_files(&[
            ("/text", b"a\tb\n\nc\n"),
            ("/no-newline", b"x"),
            ("/empty", b""),
            ("/newline", b"\n"),
            ("/two-newlines", b"\n\n"),
            ("/binary", &[0, 1, 2, 0xfe, 0xff]),
            ("/cr", b"a\r\n"),
            ("/long", &[0x5a; 100]),
            ("/long-binary", &[0x01; 100]),
        ]);
        fx.insert("/dir", Entry::Dir);
        fx.insert("/link", Entry::Link("../x y".to_string()));
        fx.comments = vec!["captured by a test".to_string()];
        let text = fx.render();
        assert_eq!(Fixture::parse(&text).unwrap(), fx, "rendered:\n{text}");
    }

    #[test]
    fn recorder_captures_what_was_read() {
        let mut inner = Fixture::from_files(&[("/d/a", b"1\n"), ("/d/b", b"2\n"), ("/x", b"x")]);
        inner.insert("/l", Entry::Link("target".to_string()));
        let rec = Recorder::new(&inner);
        assert_eq!(rec.list("/d"), vec!["a", "b"]);
        assert_eq!(rec.read("/d/a").as_deref(), Some(&b"1\n"[..]));
        assert_eq!(rec.read_link("/l").as_deref(), Some("target"));
        assert_eq!(rec.read("/missing"), None);
        let got = rec.into_fixture(vec![]);
        let want: Vec<&str> = vec!["/d", "/d/a", "/d/b", "/l"];
        assert_eq!(got.entries.keys().collect::<Vec<_>>(), want);
        assert_eq!(
            got.entries.get("/d/a"),
            Some(&Entry::File(b"1\n".to_vec())),
            "a read file is not a directory"
        );
        assert_eq!(got.list("/d"), vec!["a", "b"], "listing replays");
    }
}
