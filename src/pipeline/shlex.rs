//! POSIX shell-like splitting of `run:` commands, as Python's `shlex.split` does it
//! (posix mode, no comments): whitespace separates words, single quotes are literal,
//! double quotes allow `\` before `\`, `"`, `$`, `` ` `` and newline, and a bare `\`
//! escapes the next character.

/// Why a command could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShlexError {
    #[error("No closing quotation")]
    NoClosingQuotation,
    #[error("No escaped character")]
    NoEscapedCharacter,
}

pub fn split(s: &str) -> Result<Vec<String>, ShlexError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(ShlexError::NoClosingQuotation),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('\\' | '"' | '$' | '`' | '\n')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(ShlexError::NoClosingQuotation),
                        },
                        Some(c) => word.push(c),
                        None => return Err(ShlexError::NoClosingQuotation),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(ShlexError::NoEscapedCharacter),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_python_shlex() {
        assert_eq!(split("a b  c").unwrap(), ["a", "b", "c"]);
        assert_eq!(split("a 'b c' \"d e\"").unwrap(), ["a", "b c", "d e"]);
        assert_eq!(split(r#"a\ b "x\"y" 'q\n'"#).unwrap(), ["a b", "x\"y", "q\\n"]);
        assert_eq!(split("x''").unwrap(), ["x"]);
        assert_eq!(split("''").unwrap(), [""]);
        assert_eq!(split("").unwrap(), Vec::<String>::new());
        assert_eq!(split("'a").unwrap_err(), ShlexError::NoClosingQuotation);
        assert_eq!(split("a\\").unwrap_err(), ShlexError::NoEscapedCharacter);
    }
}
