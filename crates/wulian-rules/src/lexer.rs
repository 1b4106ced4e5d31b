//! Turns rule text into tokens, each with its byte offset so that every later error can point
//! at the exact place.

use crate::error::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Int(i64),
    Float(f64),
    /// `'text'`, with `''` as an escaped quote.
    Str(String),
    /// A bare word: an identifier or a keyword (keywords are recognised by the parser,
    /// case-insensitively, so that field names like `end_time` stay plain identifiers).
    Ident(String),
    /// `"any name"`: always a payload field, never a keyword or metadata.
    QuotedIdent(String),
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Concat,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub offset: usize,
    pub len: usize,
}

/// Upper bound on rule text, so a pasted blob cannot make the parser work for long.
pub const MAX_RULE_LEN: usize = 64 * 1024;

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    if src.len() > MAX_RULE_LEN {
        return Err(ParseError::new(
            src,
            MAX_RULE_LEN,
            vec![format!("at most {MAX_RULE_LEN} bytes of rule text")],
            format!("{} bytes", src.len()),
        ));
    }
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // `-- comment` to the end of the line, as in SQL.
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let simple = match c {
            b',' => Some(Tok::Comma),
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b'*' => Some(Tok::Star),
            b'+' => Some(Tok::Plus),
            b'-' => Some(Tok::Minus),
            b'/' => Some(Tok::Slash),
            b'%' => Some(Tok::Percent),
            b'=' => Some(Tok::Eq),
            _ => None,
        };
        if let Some(tok) = simple {
            // `==` is accepted as a courtesy to programmers; it means `=`.
            let len = if c == b'=' && bytes.get(i + 1) == Some(&b'=') {
                2
            } else {
                1
            };
            tokens.push(Token {
                tok,
                offset: start,
                len,
            });
            i += len;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let two = match (c, next) {
            (b'!', Some(b'=')) => Some(Tok::NotEq),
            (b'<', Some(b'>')) => Some(Tok::NotEq),
            (b'<', Some(b'=')) => Some(Tok::Le),
            (b'>', Some(b'=')) => Some(Tok::Ge),
            (b'|', Some(b'|')) => Some(Tok::Concat),
            _ => None,
        };
        if let Some(tok) = two {
            tokens.push(Token {
                tok,
                offset: start,
                len: 2,
            });
            i += 2;
            continue;
        }
        match c {
            b'<' | b'>' => {
                let tok = if c == b'<' { Tok::Lt } else { Tok::Gt };
                tokens.push(Token {
                    tok,
                    offset: start,
                    len: 1,
                });
                i += 1;
            }
            b'.' if !next.is_some_and(|n| n.is_ascii_digit()) => {
                tokens.push(Token {
                    tok: Tok::Dot,
                    offset: start,
                    len: 1,
                });
                i += 1;
            }
            b'0'..=b'9' | b'.' => {
                let (tok, end) = number(src, start)?;
                tokens.push(Token {
                    tok,
                    offset: start,
                    len: end - start,
                });
                i = end;
            }
            b'\'' | b'"' => {
                let (text, end) = quoted(src, start, c)?;
                let tok = if c == b'\'' {
                    Tok::Str(text)
                } else {
                    if text.is_empty() {
                        return Err(ParseError::new(
                            src,
                            start,
                            vec!["a non-empty quoted name".into()],
                            "\"\"".into(),
                        ));
                    }
                    Tok::QuotedIdent(text)
                };
                tokens.push(Token {
                    tok,
                    offset: start,
                    len: end - start,
                });
                i = end;
            }
            _ if c == b'_' || c.is_ascii_alphabetic() => {
                let mut end = i;
                while end < bytes.len()
                    && (bytes[end] == b'_' || bytes[end].is_ascii_alphanumeric())
                {
                    end += 1;
                }
                tokens.push(Token {
                    tok: Tok::Ident(src[start..end].to_string()),
                    offset: start,
                    len: end - start,
                });
                i = end;
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(ParseError::new(
                    src,
                    start,
                    vec!["a token".into()],
                    format!("'{ch}'"),
                ));
            }
        }
    }
    tokens.push(Token {
        tok: Tok::Eof,
        offset: src.len(),
        len: 0,
    });
    Ok(tokens)
}

fn number(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut end = start;
    let mut is_float = false;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    if end < bytes.len() && bytes[end] == b'.' {
        is_float = true;
        end += 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
    }
    if end < bytes.len() && (bytes[end] == b'e' || bytes[end] == b'E') {
        let mut j = end + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            is_float = true;
            end = j;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
        }
    }
    // `12abc` is a typo, not the number 12 followed by the name abc.
    if end < bytes.len() && (bytes[end] == b'_' || bytes[end].is_ascii_alphabetic()) {
        let mut bad_end = end;
        while bad_end < bytes.len()
            && (bytes[bad_end] == b'_' || bytes[bad_end].is_ascii_alphanumeric())
        {
            bad_end += 1;
        }
        return Err(ParseError::new(
            src,
            start,
            vec!["a number".into()],
            format!("'{}'", &src[start..bad_end]),
        ));
    }
    let text = &src[start..end];
    let tok = if is_float {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Tok::Float)
    } else {
        text.parse::<i64>().ok().map(Tok::Int).or_else(|| {
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Tok::Float)
        })
    };
    match tok {
        Some(tok) => Ok((tok, end)),
        None => Err(ParseError::new(
            src,
            start,
            vec!["a finite number".into()],
            format!("'{text}'"),
        )),
    }
}

/// A quoted string or name; the quote character doubled inside stands for itself.
fn quoted(src: &str, start: usize, quote: u8) -> Result<(String, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut chunk_start = i;
    while i < bytes.len() {
        if bytes[i] == quote {
            out.push_str(&src[chunk_start..i]);
            if bytes.get(i + 1) == Some(&quote) {
                out.push(quote as char);
                i += 2;
                chunk_start = i;
                continue;
            }
            return Ok((out, i + 1));
        }
        i += 1;
    }
    let closing = if quote == b'\'' { "'" } else { "\"" };
    Err(ParseError::new(
        src,
        src.len(),
        vec![format!(
            "closing {closing} of the string that starts at offset {start}"
        )],
        "end of input".into(),
    ))
}
