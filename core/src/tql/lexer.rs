//! Tokens of TQL with their byte offsets in the query text.
//!
//! Keywords are not told apart here: the parser matches identifiers case-insensitively,
//! so a tensor may be named like a keyword when it is double-quoted. `::` is two colons
//! (a NumPy step, `x[::2]`), never a cast; `==` and `=` are the same operator.

use crate::error::{Error, QueryErrorKind, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A bare word: a keyword, a function or a tensor name.
    Ident(String),
    /// `"double quoted"`: a tensor name or a dataset URL.
    Quoted(String),
    /// `'single quoted'`, with `''` for a quote.
    Str(String),
    Int(i64),
    Float(f64),
    Sym(&'static str),
    End,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => s.to_ascii_uppercase(),
            Tok::Quoted(s) => format!("\"{s}\""),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Int(i) => i.to_string(),
            Tok::Float(f) => f.to_string(),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::End => "end of query".to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    /// Byte offset of the first character.
    pub pos: usize,
}

/// Multi-character symbols first, so the longest match wins.
const SYMBOLS: &[&str] = &[
    "==", "!=", "<>", "<=", ">=", "||", "(", ")", "[", "]", ",", ".", ":", ";", "*", "+", "-", "/",
    "%", "^", "=", "<", ">", "?",
];

/// Longest query text accepted; a bound on everything the parser allocates.
pub const MAX_QUERY_BYTES: usize = 1 << 20;

pub fn lex(text: &str) -> Result<Vec<Token>> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(Error::query(
            QueryErrorKind::Syntax,
            None,
            format!(
                "query is {} bytes long; the limit is {MAX_QUERY_BYTES}",
                text.len()
            ),
        ));
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            // A comment to the end of the line.
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(text[start..i].to_owned()),
                pos: start,
            });
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            out.push(Token {
                tok: number(text, &mut i)?,
                pos: start,
            });
            continue;
        }
        if c == b'\'' || c == b'"' {
            let s = quoted(text, &mut i, c)?;
            out.push(Token {
                tok: if c == b'\'' {
                    Tok::Str(s)
                } else {
                    Tok::Quoted(s)
                },
                pos: start,
            });
            continue;
        }
        match SYMBOLS.iter().find(|s| text[i..].starts_with(**s)) {
            Some(s) => {
                i += s.len();
                out.push(Token {
                    tok: Tok::Sym(if *s == "=" { "==" } else { s }),
                    pos: start,
                });
            }
            None => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(Error::query(
                    QueryErrorKind::Syntax,
                    Some(char_pos(text, i)),
                    format!("unexpected character {ch:?}"),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        pos: text.len(),
    });
    Ok(out)
}

fn number(text: &str, i: &mut usize) -> Result<Tok> {
    let b = text.as_bytes();
    let start = *i;
    let mut float = false;
    while *i < b.len() && b[*i].is_ascii_digit() {
        *i += 1;
    }
    // `1.` followed by a digit is a float; `x[1:2]` and `t.col` are not affected.
    if *i < b.len() && b[*i] == b'.' && b.get(*i + 1).is_none_or(|c| !c.is_ascii_alphabetic()) {
        float = true;
        *i += 1;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
    }
    if *i < b.len() && (b[*i] == b'e' || b[*i] == b'E') {
        let mut j = *i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            float = true;
            *i = j;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
        }
    }
    let s = &text[start..*i];
    let bad = |what: &str| {
        Error::query(
            QueryErrorKind::Syntax,
            Some(char_pos(text, start)),
            format!("{what} literal {s} is out of range"),
        )
    };
    if float {
        s.parse::<f64>().map(Tok::Float).map_err(|_| bad("number"))
    } else {
        s.parse::<i64>().map(Tok::Int).map_err(|_| bad("integer"))
    }
}

fn quoted(text: &str, i: &mut usize, q: u8) -> Result<String> {
    let b = text.as_bytes();
    let start = *i;
    *i += 1;
    let mut s = String::new();
    let mut run = *i;
    while *i < b.len() {
        if b[*i] == q {
            s.push_str(&text[run..*i]);
            if b.get(*i + 1) == Some(&q) {
                s.push(q as char);
                *i += 2;
                run = *i;
                continue;
            }
            *i += 1;
            return Ok(s);
        }
        *i += 1;
    }
    Err(Error::query(
        QueryErrorKind::Syntax,
        Some(char_pos(text, start)),
        "unterminated quoted string".to_owned(),
    ))
}

/// Character (not byte) position, as users count them.
pub fn char_pos(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(byte, |s| s.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn slices_numbers_and_strings() {
        assert_eq!(
            toks("x[::2, 1:3] = 'it''s' 1.5e2 .5"),
            vec![
                Tok::Ident("x".into()),
                Tok::Sym("["),
                Tok::Sym(":"),
                Tok::Sym(":"),
                Tok::Int(2),
                Tok::Sym(","),
                Tok::Int(1),
                Tok::Sym(":"),
                Tok::Int(3),
                Tok::Sym("]"),
                Tok::Sym("=="),
                Tok::Str("it's".into()),
                Tok::Float(150.0),
                Tok::Float(0.5),
                Tok::End
            ]
        );
    }

    #[test]
    fn errors_name_the_position() {
        let e = lex("SELECT * WHERE a == 'open").unwrap_err().to_string();
        assert!(
            e.contains("position 20") && e.contains("unterminated"),
            "{e}"
        );
        let e = lex("SELECT # ").unwrap_err().to_string();
        assert!(e.contains("position 7"), "{e}");
        assert!(lex("99999999999999999999").is_err());
    }
}
