//! `multipart/form-data` bodies (uploads to `/v1/audio/transcriptions`, `/v1/images/edits`):
//! where each part sits in the body, so the `model` field can be read and rewritten while
//! every other byte (part order, names, filenames, content types, the files) goes upstream as
//! the client sent it, boundary included.
//!
//! A bounded scanner over the body the proxy has already read in full (at most
//! `GATEWAY_MAX_BODY_BYTES`): it copies nothing and never looks past the body's end.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The `name` of its `Content-Disposition` header.
    pub name: Option<String>,
    /// Whether it carries a `filename` (an uploaded file rather than a field).
    pub file: bool,
    /// Where its content is in the body.
    pub body: Range<usize>,
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        // RFC 2046: 1 to 70 characters.
        (!v.is_empty() && v.len() <= 70).then_some(v)
    })
}

/// The parts of `body`, in order. An error says what is malformed.
pub fn parts(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let dash = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    let find_delim = memmem::Finder::new(delim.as_bytes());
    // The first delimiter may open the body (no CRLF before it) or follow a preamble.
    let mut at = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        match find_delim.find(body) {
            Some(i) => i + delim.len(),
            None => return Err("the multipart body has no boundary line".into()),
        }
    };
    let end_headers = memmem::Finder::new(b"\r\n\r\n");
    let mut out = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        // Transport padding (spaces, tabs) may follow a boundary before its CRLF.
        let pad = rest
            .iter()
            .take_while(|c| **c == b' ' || **c == b'\t')
            .count();
        if !rest[pad..].starts_with(b"\r\n") {
            return Err("a multipart boundary line is not followed by CRLF".into());
        }
        let head_start = at + pad + 2;
        let (headers, body_start) = if body[head_start..].starts_with(b"\r\n") {
            // A part without headers.
            (&body[head_start..head_start], head_start + 2)
        } else {
            match end_headers.find(&body[head_start..]) {
                Some(i) => (&body[head_start..head_start + i], head_start + i + 4),
                None => return Err("a multipart part's headers do not end".into()),
            }
        };
        let Some(len) = next_delimiter(&find_delim, body, body_start, delim.len()) else {
            return Err("the multipart body does not end with its closing boundary".into());
        };
        let (name, file) = disposition(headers);
        out.push(Part {
            name,
            file,
            body: body_start..body_start + len,
        });
        at = body_start + len + delim.len();
    }
}

/// Where the next delimiter starts, relative to `from`: `CRLF--boundary` followed by `--` (the
/// close) or by optional padding and CRLF. The same bytes followed by anything else are data
/// (a sender should never let that happen, but a file's bytes are no place to fail).
fn next_delimiter(
    finder: &memmem::Finder<'_>,
    body: &[u8],
    from: usize,
    delim_len: usize,
) -> Option<usize> {
    let mut at = from;
    loop {
        let i = finder.find(&body[at..])?;
        let after = &body[at + i + delim_len..];
        let pad = after
            .iter()
            .take_while(|c| **c == b' ' || **c == b'\t')
            .count();
        if after.starts_with(b"--") || after[pad..].starts_with(b"\r\n") {
            return Some(at + i - from);
        }
        at += i + 1;
    }
}

/// The `name` and whether there is a `filename`, from a part's headers.
fn disposition(headers: &[u8]) -> (Option<String>, bool) {
    let text = String::from_utf8_lossy(headers);
    for line in text.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut name = None;
        let mut file = false;
        for param in split_params(v).into_iter().skip(1) {
            let Some((pk, pv)) = param.split_once('=') else {
                continue;
            };
            let pk = pk.trim().to_ascii_lowercase();
            let pv = unquote(pv.trim());
            match pk.as_str() {
                "name" => name = Some(pv),
                "filename" | "filename*" => file = true,
                _ => {}
            }
        }
        return (name, file);
    }
    (None, false)
}

/// Splits header parameters on `;` outside quoted strings.
fn split_params(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// The text of the field named `name` (not a file), if there is one.
#[cfg(test)]
pub fn field<'a>(body: &'a [u8], parts: &[Part], name: &str) -> Option<&'a [u8]> {
    parts
        .iter()
        .find(|p| !p.file && p.name.as_deref() == Some(name))
        .map(|p| &body[p.body.clone()])
}

/// `body` with the content of `part` replaced by `value`; every other byte as it was.
pub fn replace(body: &Bytes, part: &Part, value: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..part.body.start]);
    out.extend_from_slice(value);
    out.extend_from_slice(&body[part.body.end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "----form123";

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(format!("--{B}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
        out
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----form123"),
            Some("----form123")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; Boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn model_after_the_file_is_found_and_rewritten_alone() {
        // Bytes that look like a boundary without the CRLF before it, and binary data.
        let audio: Vec<u8> = (0..=255u8).chain(b"--".iter().copied()).collect();
        let mut file = audio.clone();
        file.extend_from_slice(format!("--{B}").as_bytes());
        let body = Bytes::from(form(&[
            ("file", Some("a \\\"b\\\".wav"), &file),
            ("model", None, b"openai/whisper-1"),
            ("language", None, b"en"),
        ]));
        let ps = parts(&body, B).unwrap();
        assert_eq!(ps.len(), 3);
        assert!(ps[0].file);
        assert_eq!(&body[ps[0].body.clone()], &file[..]);
        assert_eq!(field(&body, &ps, "model"), Some(&b"openai/whisper-1"[..]));
        let model = ps
            .iter()
            .find(|p| p.name.as_deref() == Some("model"))
            .unwrap();
        let out = replace(&body, model, b"whisper-1");
        let expected = form(&[
            ("file", Some("a \\\"b\\\".wav"), &file),
            ("model", None, b"whisper-1"),
            ("language", None, b"en"),
        ]);
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let good = form(&[("model", None, b"m")]);
        for cut in 0..good.len() {
            let _ = parts(&good[..cut], B);
        }
        assert!(parts(b"no boundary here", B).is_err());
        assert!(parts(
            format!("--{B}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nvalue").as_bytes(),
            B
        )
        .is_err());
        assert_eq!(parts(&good, B).unwrap().len(), 1);
        // A preamble before the first boundary.
        let mut pre = b"preamble\r\n".to_vec();
        pre.extend_from_slice(&good);
        assert_eq!(
            field(&pre, &parts(&pre, B).unwrap(), "model"),
            Some(&b"m"[..])
        );
    }
}
