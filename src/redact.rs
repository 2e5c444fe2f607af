//! Secret redaction: the one place that removes credentials from text before
//! it is printed, logged or stored.
//!
//! Messages can carry secrets that difflog never meant to print: an HTTP
//! client's error names the full URL (a signed upload URL's query is a
//! credential), a server may echo request headers in a 400 body, a TOML
//! parser quotes the line it failed on. So every message that leaves the
//! program or goes into the sync state passes through [`redact`], which
//! removes
//!
//! - every secret difflog was given (tokens, passwords, API keys — registered
//!   with [`register_secret`] when they are read), also in the base64 forms
//!   HTTP Basic authentication sends them in;
//! - `user:password@` in URLs;
//! - the query string of URLs (signed URLs carry their signature there),
//!   and of any path-like word (`/container/blob?sv=…&sig=…`: a storage
//!   error echoing the request path without its scheme and host);
//! - the values of signing parameters wherever they appear (`sig=`,
//!   `signature=`, `token=`, `access_token=`, `api_key=`, `X-Amz-*=`,
//!   `X-Goog-*=`, and those names as `Name: value` headers);
//! - the value after `Bearer ` / `Basic ` (an echoed `Authorization` header).
//!
//! Files that hold secrets (a sync config, a signing key) are read here too,
//! by [`read_private_file`]: only when no one but their owner can read them.

use std::path::Path;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers `secret` (and, with `user`, its HTTP Basic form
/// `base64(user:secret)`) so that [`redact`] removes it from every message.
pub fn register_secret(user: Option<&str>, secret: &str) {
    if secret.len() < 4 {
        // Too short to find reliably without mangling ordinary text; such a
        // secret is still removed wherever it appears as a header value.
        return;
    }
    let mut forms = vec![secret.to_string(), base64(secret.as_bytes())];
    if let Some(u) = user {
        forms.push(base64(format!("{u}:{secret}").as_bytes()));
    }
    let mut all = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for f in forms {
        let f = f.trim_end_matches('=').to_string();
        if !all.contains(&f) {
            all.push(f);
        }
    }
    // Longest first, so that a secret inside another is not half-replaced.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every known secret, URL credential, URL query string and
/// authorization value replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    {
        let all = SECRETS.read().unwrap_or_else(|p| p.into_inner());
        for s in all.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
    }
    out = redact_urls(&out);
    out = redact_path_queries(&out);
    out = redact_signing_params(&out);
    for scheme in ["Bearer ", "Basic ", "bearer ", "basic "] {
        out = redact_after(&out, scheme);
    }
    out
}

/// Replaces the word after each `marker` with [`REDACTED`].
fn redact_after(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '}' | ']'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.push_str(REDACTED);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Removes `user:pass@` and `?query` from every `scheme://…` URL in `text`.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(rest.len());
        let url = &rest[..end];
        let (authority, path) = match url.find('/') {
            Some(j) => (&url[..j], &url[j..]),
            None => (url, ""),
        };
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.len() != authority.len() {
            out.push_str(REDACTED);
            out.push('@');
        }
        out.push_str(host);
        match path.find('?') {
            Some(q) => {
                out.push_str(&path[..q]);
                out.push('?');
                out.push_str(REDACTED);
            }
            None => out.push_str(path),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where a word of a message ends.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | ',' | ';' | '`')
}

/// Removes the query of every path-like word (one holding a `/` before
/// its `?`), with or without a scheme.
fn redact_path_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(q) = rest.find('?') {
        let start = rest[..q].rfind(ends_word).map_or(0, |i| i + 1);
        let word = &rest[start..q];
        let after = &rest[q + 1..];
        let end = after.find(ends_word).unwrap_or(after.len());
        out.push_str(&rest[..=q]);
        if word.contains('/') && end > 0 && !after[..end].starts_with(REDACTED) {
            out.push_str(REDACTED);
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether a parameter or header name carries a signature or a token.
fn is_signing_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "sig" | "signature" | "token" | "access_token" | "api_key" | "apikey" | "googleaccessid"
    ) || n.starts_with("x-amz-")
        || n.starts_with("x-goog-")
}

/// Replaces the value of every `name=value` / `Name: value` whose name
/// carries a signature or a token.
fn redact_signing_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['=', ':']) {
        let sep = &rest[i..];
        let value_at = if sep.starts_with(": ") { i + 2 } else { i + 1 };
        let name_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map_or(0, |j| j + 1);
        let name = &rest[name_start..i];
        let value = &rest[value_at..];
        let end = value
            .find(|c: char| ends_word(c) || c == '&' || c == '}' || c == ']')
            .unwrap_or(value.len());
        if is_signing_name(name) && end > 0 && !value.starts_with(REDACTED) {
            out.push_str(&rest[..value_at]);
            out.push_str(REDACTED);
            rest = &value[end..];
        } else {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads a file that may hold credentials (a `--config` file, AWS's shared
/// credentials file, a signing key): it must be a regular file (checked
/// before opening: a FIFO would block the open forever), readable by its
/// owner only, and at most `max` bytes. `what` names it in errors.
pub fn read_private_file(path: &Path, what: &'static str, max: u64) -> crate::Result<String> {
    read_config_file(path, what, max, true)
}

/// Reads a configuration file: a regular file (checked before opening) of
/// at most `max` bytes, and with `private`, readable by its owner only (see
/// [`read_private_file`]). `what` names it in errors.
pub fn read_config_file(path: &Path, what: &str, max: u64, private: bool) -> crate::Result<String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let bad = |why: String| crate::Error::file(path, why);
    let md = std::fs::metadata(path).map_err(|e| crate::Error::io(path, "read", e))?;
    if !md.is_file() {
        let kind = if md.is_dir() {
            "a directory"
        } else if md.file_type().is_fifo() {
            "a FIFO"
        } else {
            "not a regular file"
        };
        return Err(bad(format!(
            "the {what} must be a regular file, and this is {kind}"
        )));
    }
    if private && md.permissions().mode() & 0o077 != 0 {
        return Err(bad(format!(
            "{what} files may hold credentials and must not be readable by others (chmod 600 {})",
            path.display()
        )));
    }
    if md.len() > max {
        return Err(bad(format!(
            "{} bytes is too large for a {what} file",
            md.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, "read", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"api:KEY"), "YXBpOktFWQ==");
    }

    #[test]
    fn secrets_urls_queries_and_authorization_values_are_removed() {
        register_secret(Some("api"), "k3y-sekrit-value");
        let t = redact(
            "PUT https://store.example/b/o.png?X-Amz-Signature=abc&X-Amz-Credential=AKIA failed: \
             error sending request for url (https://bob:pw@h:1/x?sig=1); body \
             {\"headers\": {\"Authorization\": \"Bearer tok-123\"}} key k3y-sekrit-value \
             basic YXBpOmszeS1zZWtyaXQtdmFsdWU=",
        );
        for leak in [
            "abc",
            "AKIA",
            "bob",
            ":pw",
            "sig=1",
            "tok-123",
            "k3y-sekrit-value",
            "YXBpOmszeS1zZWtyaXQtdmFsdWU",
        ] {
            assert!(!t.contains(leak), "{leak} in {t}");
        }
        assert!(
            t.contains("https://store.example/b/o.png?[redacted]"),
            "{t}"
        );
        assert!(t.contains("https://[redacted]@h:1/x?[redacted]"), "{t}");
        // Ordinary text is left alone.
        assert_eq!(
            redact("run 20261127T103219.482Z-5f2c1a: 3 calls"),
            "run 20261127T103219.482Z-5f2c1a: 3 calls"
        );
        assert_eq!(
            redact("what? a cat: 3 images, x=1 (ok)"),
            "what? a cat: 3 images, x=1 (ok)"
        );
    }

    #[test]
    fn echoed_queries_and_signing_parameters_are_removed_wherever_they_appear() {
        // Issue 32, item 12: a storage error echoing its request path with
        // an Azure SAS, W&B's signed URLs, S3's and GCS's signing fields.
        let t = redact(
            "AuthenticationFailed: /runs/mlruns/1/a.png?sv=2023-01-03&se=2030&sp=w&sig=SAS-SEKRIT1 \
             <Detail>X-Amz-Signature=S3-SEKRIT2&X-Amz-Security-Token=S3-SEKRIT3</Detail> \
             x-goog-signature: GCS-SEKRIT4, {\"token\":\"x\", \"url\": \"storage/upload?sig=W-SEKRIT5\"} \
             signature=SEKRIT6",
        );
        for leak in [
            "SAS-SEKRIT1",
            "S3-SEKRIT2",
            "S3-SEKRIT3",
            "GCS-SEKRIT4",
            "W-SEKRIT5",
            "SEKRIT6",
        ] {
            assert!(!t.contains(leak), "{leak} in {t}");
        }
        assert!(t.contains("/runs/mlruns/1/a.png?[redacted]"), "{t}");
    }
}
