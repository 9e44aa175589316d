//! Splitting of `run:` commands exactly as Python's `shlex.split` does it (posix mode,
//! `whitespace_split`, no comments), which is what the job runner uses: the same state
//! machine as `shlex.shlex.read_token`. Whitespace is `' \t\r\n'` only (not other Unicode
//! or ASCII whitespace); single quotes are literal; inside double quotes a `\` escapes only
//! `"` and `\` (elsewhere it is kept); outside quotes a `\` escapes any character.
//!
//! Not the `shlex` crate: it splits as a POSIX shell does (`\$` inside double quotes, `#`
//! comments), which differs from Python's on exactly these strings.

/// Why a command could not be split (Python's `ValueError` messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShlexError {
    #[error("No closing quotation")]
    NoClosingQuotation,
    #[error("No escaped character")]
    NoEscapedCharacter,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Where the splitter is, as `shlex.state`.
#[derive(Clone, Copy, PartialEq)]
enum State {
    /// Between words (`' '`).
    Between,
    /// In a word (`'a'`).
    Word,
    /// In a quoted part (`'` or `"`).
    Quoted(char),
    /// After a `\`, which came from `from` (a word or a double-quoted part).
    Escape { from: Escaped },
}

#[derive(Clone, Copy, PartialEq)]
enum Escaped {
    Word,
    DoubleQuoted,
}

pub fn split(s: &str) -> Result<Vec<String>, ShlexError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word starts with its first character or quote (so `''` is an empty word, as Python's
    // `quoted` flag makes it) and ends at whitespace or the end.
    let mut state = State::Between;
    for c in s.chars() {
        state = match state {
            State::Between | State::Word if is_whitespace(c) => {
                if state == State::Word {
                    words.push(std::mem::take(&mut word));
                }
                State::Between
            }
            State::Between | State::Word => match c {
                '\\' => State::Escape { from: Escaped::Word },
                '\'' | '"' => State::Quoted(c),
                c => {
                    word.push(c);
                    State::Word
                }
            },
            State::Quoted(q) => {
                if c == q {
                    State::Word
                } else if c == '\\' && q == '"' {
                    State::Escape { from: Escaped::DoubleQuoted }
                } else {
                    word.push(c);
                    state
                }
            }
            State::Escape { from } => {
                if from == Escaped::DoubleQuoted && c != '"' && c != '\\' {
                    word.push('\\');
                }
                word.push(c);
                match from {
                    Escaped::Word => State::Word,
                    Escaped::DoubleQuoted => State::Quoted('"'),
                }
            }
        };
    }
    match state {
        State::Quoted(_) => Err(ShlexError::NoClosingQuotation),
        State::Escape { .. } => Err(ShlexError::NoEscapedCharacter),
        State::Word => {
            words.push(word);
            Ok(words)
        }
        State::Between => Ok(words),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_python_shlex() {
        assert_eq!(split("a b  c").unwrap(), ["a", "b", "c"]);
        assert_eq!(split("a 'b c' \"d e\"").unwrap(), ["a", "b c", "d e"]);
        assert_eq!(split(r#"a\ b "x\"y" 'q\n'"#).unwrap(), ["a b", "x\"y", "q\\n"]);
        assert_eq!(split(r#""\$HOME" "a\`b""#).unwrap(), ["\\$HOME", "a\\`b"]);
        assert_eq!(split("a\u{a0}b\u{b}c").unwrap(), ["a\u{a0}b\u{b}c"]);
        assert_eq!(split("x''").unwrap(), ["x"]);
        assert_eq!(split("''").unwrap(), [""]);
        assert_eq!(split("").unwrap(), Vec::<String>::new());
        assert_eq!(split("'a").unwrap_err(), ShlexError::NoClosingQuotation);
        assert_eq!(split("\"a\\").unwrap_err(), ShlexError::NoEscapedCharacter);
        assert_eq!(split("a\\").unwrap_err(), ShlexError::NoEscapedCharacter);
    }

    /// The same strings through python3's `shlex.split`: every answer, word lists and errors
    /// alike, must be Python's.
    #[test]
    fn agrees_with_python_on_tricky_strings() {
        let cases: Vec<&str> = vec![
            "",
            " ",
            "a",
            "  a  b\tc\nd\re ",
            "a\u{a0}b",
            "a\u{b}b\u{c}c",
            "a\u{2003}b\u{3000}c",
            "'a b' \"c d\"",
            "''",
            "\"\"",
            "x'' ''y \"\"z",
            "'' ''",
            "a\\ b",
            "a\\\\b",
            "a\\'b",
            "a\\\"b",
            "a\\\nb",
            "\"a\\\"b\"",
            "\"a\\\\b\"",
            "\"a\\$b\"",
            "\"a\\`b\"",
            "\"a\\nb\"",
            "\"a\\\nb\"",
            "'a\\b'",
            "'a\\'",
            "'a\"b' \"a'b\"",
            "a#b #c",
            "# comment",
            "a;b|c&d>e<f",
            "python analysis/x.py --output 'output/a b.csv' --flag=\"x y\"",
            "r:latest analysis/model.R \"--config={\\\"a\\\": 1}\"",
            "é ü \u{1F600} 'ça va'",
            "a'b'c\"d\"e",
            "\\",
            "a\\",
            "'a",
            "\"a",
            "\"a\\",
            "\"a\\\"",
            "a 'b",
            "\\'",
            "\\\\",
            "\t\t",
        ];
        let python = std::env::var("QUARRY_PYTHON").unwrap_or_else(|_| "python3".into());
        let input = serde_json::to_string(&cases).unwrap();
        let script = r#"
import json, shlex, sys
out = []
for s in json.loads(sys.stdin.read()):
    try:
        out.append({"ok": shlex.split(s)})
    except ValueError as e:
        out.append({"err": str(e)})
print(json.dumps(out))
"#;
        let mut child = std::process::Command::new(&python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("this test compares with Python's shlex and needs {python}: {e}"));
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let expected: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(expected.len(), cases.len());
        for (case, want) in cases.iter().zip(expected) {
            let got = match split(case) {
                Ok(words) => serde_json::json!({ "ok": words }),
                Err(e) => serde_json::json!({ "err": e.to_string() }),
            };
            assert_eq!(got, want, "shlex.split({case:?})");
        }
    }
}
