//! What difflog prints for people: one escaping rule for every line.
//!
//! Text that came from elsewhere — a run's prompts and names, a server's
//! error body, a stored sync error, a PNG's text chunks — may hold bytes a
//! terminal acts on: escape sequences that clear the screen, retitle the
//! window or fake a line, and bidirectional controls (U+202E …) that make
//! text read other than it is. Everything difflog prints for people passes
//! through [`Escaping`], which shows those characters escaped (`\u{1b}`,
//! `\u{202e}`); line breaks and tabs stay. JSON output keeps its strings
//! exact: JSON escapes control characters itself, and the bidirectional
//! ones are written as JSON escapes (`\u202e`), which decode to the same
//! string.

use std::borrow::Cow;
use std::io::Write;

/// Whether `c` is shown escaped rather than sent to a terminal.
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` as it may be printed: every unsafe character as `\u{…}`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            safe.extend(c.escape_default());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// JSON text with the bidirectional controls inside its strings written as
/// JSON escapes (serde_json escapes the control characters already).
fn escape_json(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' {
            safe.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// A writer that applies the rule to everything written through it.
pub struct Escaping<'a> {
    out: &'a mut dyn Write,
    json: bool,
}

impl<'a> Escaping<'a> {
    /// For text meant for people.
    pub fn text(out: &'a mut dyn Write) -> Escaping<'a> {
        Escaping { out, json: false }
    }

    /// For JSON (`--json`): strings stay exact when decoded.
    pub fn json(out: &'a mut dyn Write) -> Escaping<'a> {
        Escaping { out, json: true }
    }

    /// [`Escaping::json`] when `json`, else [`Escaping::text`].
    pub fn new(out: &'a mut dyn Write, json: bool) -> Escaping<'a> {
        Escaping { out, json }
    }
}

impl Write for Escaping<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(buf);
        let safe = if self.json {
            escape_json(&text)
        } else {
            escape(&text)
        };
        self.out.write_all(safe.as_bytes())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidirectional_marks_are_escaped_line_breaks_kept() {
        let evil = "a\u{1b}[2J\u{7}b\u{202e}gnp.exe\u{2066}\nnext\tcol";
        assert_eq!(
            escape(evil),
            "a\\u{1b}[2J\\u{7}b\\u{202e}gnp.exe\\u{2066}\nnext\tcol"
        );
        assert!(matches!(escape("plain text"), Cow::Borrowed(_)));
        let json = serde_json::json!({"m": evil}).to_string();
        let mut out = Vec::new();
        Escaping::json(&mut out).write_all(json.as_bytes()).unwrap();
        let printed = String::from_utf8(out).unwrap();
        assert!(!printed.chars().any(is_unsafe), "{printed:?}");
        let back: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(back["m"], evil);
    }
}
