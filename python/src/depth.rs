//! A look at Python source before it is parsed: how deep it nests.
//!
//! The parser and compiler recurse once per level of nesting, so a definition could make
//! them run out of stack. CPython refuses such source with defined errors, and quarry
//! refuses it the same way, before the parser sees it:
//!
//! - more than 200 levels of brackets: `SyntaxError: too many nested parentheses`
//!   (CPython's tokenizer limit, exactly);
//! - a run of prefix operators (`-`, `+`, `~`, `not`, `lambda`, `await`) or a chain of
//!   right-nested operators (`**`, `if … else`) longer than [`PARSER_LIMIT`]:
//!   `MemoryError: Parser stack overflowed - Python source too complex to parse` (CPython's
//!   parser stack holds about 6,000 levels; its message);
//! - a left-nested chain (`a + a + …`, `x.a.a…`, `f()()…`) longer than
//!   [`COMPILE_LIMIT`]: `RecursionError: maximum recursion depth exceeded during
//!   compilation` (CPython 3.13 compiles 9,998 terms and refuses 10,000).
//!
//! The scan is a tokenizer of its own: strings (all prefixes, triple quotes, f-strings as
//! opaque text), comments, line continuations and brackets; it never recurses.

/// CPython's `MAXLEVEL`.
pub const BRACKET_LIMIT: usize = 200;
/// Prefix and right-nested operators in a row.
pub const PARSER_LIMIT: usize = 3000;
/// Terms in a left-nested chain.
pub const COMPILE_LIMIT: usize = 9999;

#[derive(Debug, Clone, PartialEq)]
pub enum TooDeep {
    /// `SyntaxError: too many nested parentheses` at this line and column (1-based).
    Brackets { line: usize, column: usize },
    /// `MemoryError: Parser stack overflowed - Python source too complex to parse`.
    ParserStack { line: usize },
    /// `RecursionError: maximum recursion depth exceeded during compilation`.
    Compile { line: usize },
}

/// Chain lengths at one bracket level: reset by separators (`,`, `:`, `=`, `;`, newline).
#[derive(Default, Clone)]
struct Level {
    /// Consecutive prefix operators just seen.
    prefix_run: usize,
    /// Right-nested operators (`**`, `else`) since the last separator.
    right: usize,
    /// Left-nested links (binary operators, `.name`, calls and subscripts) since the last separator.
    left: usize,
}

pub fn check(source: &str) -> Result<(), TooDeep> {
    let s = source.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = 0;
    let mut levels = vec![Level::default()];
    // The previous significant token ended an operand (a name, literal or closing bracket).
    let mut after_operand = false;
    while i < s.len() {
        let c = s[i];
        match c {
            b'\n' => {
                line += 1;
                line_start = i + 1;
                i += 1;
                if levels.len() == 1 {
                    levels[0] = Level::default();
                    after_operand = false;
                }
            }
            b'\\' if s.get(i + 1) == Some(&b'\n') => {
                i += 2;
                line += 1;
                line_start = i;
            }
            b'#' => {
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
            }
            b'\'' | b'"' => {
                (i, line, line_start) = past_string(s, i, line, line_start);
                operand(&mut levels, &mut after_operand);
            }
            b'(' | b'[' | b'{' => {
                if after_operand {
                    // A call or subscript continues a left-nested chain.
                    link(&mut levels, line)?;
                }
                if levels.len() > BRACKET_LIMIT {
                    return Err(TooDeep::Brackets { line, column: i - line_start + 1 });
                }
                levels.push(Level::default());
                after_operand = false;
                i += 1;
            }
            b')' | b']' | b'}' => {
                if levels.len() > 1 {
                    levels.pop();
                }
                after_operand = true;
                i += 1;
            }
            b'=' if s.get(i + 1) == Some(&b'=') => {
                // `==`: a comparison, flat in the parse tree.
                after_operand = false;
                i += 2;
            }
            b',' | b';' | b'=' | b':' => {
                // A separator ends the chains at this level (a `lambda`'s colon does not end
                // a run of nested lambdas).
                let level = levels.last_mut().expect("the outermost level");
                *level = Level { prefix_run: level.prefix_run, ..Level::default() };
                after_operand = false;
                i += 1;
            }
            b'.' if after_operand && !s.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                link(&mut levels, line)?;
                after_operand = false;
                i += 1;
            }
            b'*' if s.get(i + 1) == Some(&b'*') => {
                right(&mut levels, line)?;
                after_operand = false;
                i += 2;
            }
            b'-' | b'+' | b'~' if !after_operand => {
                prefix(&mut levels, line)?;
                i += 1;
            }
            b'-' | b'+' | b'*' | b'/' | b'%' | b'@' | b'&' | b'|' | b'^' | b'<' | b'>' | b'!' => {
                let mut j = i + 1;
                while j < s.len() && matches!(s[j], b'=' | b'<' | b'>' | b'/' | b'*') && j < i + 3 {
                    j += 1;
                }
                if s[j - 1] == b'=' && !matches!(&s[i..j], b"<=" | b">=" | b"!=" | b"==") {
                    // An augmented assignment: a separator.
                    *levels.last_mut().expect("the outermost level") = Level::default();
                } else if c != b'<' && c != b'>' && c != b'!' {
                    link(&mut levels, line)?;
                }
                after_operand = false;
                i = j;
            }
            _ if c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 => {
                let start = i;
                while i < s.len() && (s[i] == b'_' || s[i].is_ascii_alphanumeric() || s[i] >= 0x80) {
                    i += 1;
                }
                let word = &s[start..i];
                // A string prefix (r, b, f, u, rb, …) directly before a quote.
                if word.len() <= 2 && word.iter().all(|b| b"rRbBfFuUtT".contains(b)) && matches!(s.get(i), Some(b'\'' | b'"')) {
                    (i, line, line_start) = past_string(s, i, line, line_start);
                    operand(&mut levels, &mut after_operand);
                    continue;
                }
                match word {
                    b"not" | b"lambda" | b"await" => {
                        prefix(&mut levels, line)?;
                        after_operand = false;
                    }
                    b"else" => {
                        right(&mut levels, line)?;
                        after_operand = false;
                    }
                    b"and" | b"or" | b"if" | b"in" | b"is" | b"for" => after_operand = false,
                    _ => operand(&mut levels, &mut after_operand),
                }
            }
            b'0'..=b'9' => {
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_' || s[i] == b'.') {
                    i += 1;
                }
                operand(&mut levels, &mut after_operand);
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn operand(levels: &mut [Level], after_operand: &mut bool) {
    levels.last_mut().expect("the outermost level").prefix_run = 0;
    *after_operand = true;
}

fn prefix(levels: &mut [Level], line: usize) -> Result<(), TooDeep> {
    let level = levels.last_mut().expect("the outermost level");
    level.prefix_run += 1;
    if level.prefix_run > PARSER_LIMIT { Err(TooDeep::ParserStack { line }) } else { Ok(()) }
}

fn right(levels: &mut [Level], line: usize) -> Result<(), TooDeep> {
    let level = levels.last_mut().expect("the outermost level");
    level.right += 1;
    if level.right > PARSER_LIMIT { Err(TooDeep::ParserStack { line }) } else { Ok(()) }
}

fn link(levels: &mut [Level], line: usize) -> Result<(), TooDeep> {
    let level = levels.last_mut().expect("the outermost level");
    level.left += 1;
    if level.left >= COMPILE_LIMIT { Err(TooDeep::Compile { line }) } else { Ok(()) }
}

/// Where scanning continues after the string literal at `i`: its end, and the line and
/// line start there.
fn past_string(s: &[u8], i: usize, line: usize, line_start: usize) -> (usize, usize, usize) {
    let (end, lines) = skip_string(s, i);
    if lines == 0 {
        return (end, line, line_start);
    }
    (end, line + lines, s[..end].iter().rposition(|&b| b == b'\n').map_or(line_start, |p| p + 1))
}

/// The end of the string literal starting at `i` (a quote), and the newlines inside it.
fn skip_string(s: &[u8], i: usize) -> (usize, usize) {
    let quote = s[i];
    let triple = s.get(i + 1) == Some(&quote) && s.get(i + 2) == Some(&quote);
    let mut j = if triple { i + 3 } else { i + 1 };
    let mut lines = 0;
    while j < s.len() {
        match s[j] {
            b'\\' => {
                if s.get(j + 1) == Some(&b'\n') {
                    lines += 1;
                }
                j += 2;
            }
            b'\n' => {
                lines += 1;
                j += 1;
                if !triple {
                    // An unterminated string: the parser reports it.
                    return (j, lines);
                }
            }
            c if c == quote => {
                if !triple {
                    return (j + 1, lines);
                }
                if s.get(j + 1) == Some(&quote) && s.get(j + 2) == Some(&quote) {
                    return (j + 3, lines);
                }
                j += 1;
            }
            _ => j += 1,
        }
    }
    (s.len(), lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, n: usize) -> String {
        format!("y = {}\n", vec!["x"; n].join(op))
    }

    #[test]
    fn brackets_as_cpython() {
        let ok = format!("x = {}1{}\n", "(".repeat(200), ")".repeat(200));
        assert_eq!(check(&ok), Ok(()));
        let deep = format!("x = {}1{}\n", "(".repeat(201), ")".repeat(201));
        assert_eq!(check(&deep), Err(TooDeep::Brackets { line: 1, column: 205 }));
        let lists = format!("\n\nx = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(check(&lists), Err(TooDeep::Brackets { line: 3, .. })));
        // Brackets in strings and comments do not count.
        let quoted = format!("x = '{}'  # {}\ny = \"\"\"{}\"\"\"\n", "(".repeat(500), "[".repeat(500), "{".repeat(500));
        assert_eq!(check(&quoted), Ok(()));
    }

    #[test]
    fn chains_as_cpython() {
        assert_eq!(check(&chain(" + ", 9998)), Ok(()));
        assert_eq!(check(&chain(" + ", 10_000)), Err(TooDeep::Compile { line: 1 }));
        assert_eq!(check(&format!("y = x{}\n", ".a".repeat(100_000))), Err(TooDeep::Compile { line: 1 }));
        assert_eq!(check(&format!("y = f{}\n", "()".repeat(100_000))), Err(TooDeep::Compile { line: 1 }));
        assert_eq!(check(&chain(" ** ", 100_000)), Err(TooDeep::ParserStack { line: 1 }));
        assert_eq!(check(&format!("y = {}x\n", "-".repeat(100_000))), Err(TooDeep::ParserStack { line: 1 }));
        assert_eq!(check(&format!("y = {}x\n", "not ".repeat(100_000))), Err(TooDeep::ParserStack { line: 1 }));
        assert_eq!(check(&format!("y = {}x\n", "lambda: ".repeat(100_000))), Err(TooDeep::ParserStack { line: 1 }));
        assert_eq!(check(&chain(" if c else ", 100_000)), Err(TooDeep::ParserStack { line: 1 }));
        assert_eq!(check(&format!("y = {}\n", vec!["x"; 100_000].join(" == "))), Ok(()));
        // Flat constructs of any length are fine: and/or, lists, dicts, strings, statements.
        assert_eq!(check(&chain(" and ", 100_000)), Ok(()));
        assert_eq!(check(&format!("y = [{}]\n", vec!["x + 1"; 100_000].join(", "))), Ok(()));
        assert_eq!(check(&"x = x + 1\n".repeat(100_000)), Ok(()));
        assert_eq!(check(&format!("y = {}\n", vec!["'a'"; 100_000].join(" "))), Ok(()));
        assert_eq!(check(&format!("y = {{{}}}\n", (0..50_000).map(|i| format!("'k{i}': -{i}")).collect::<Vec<_>>().join(", "))), Ok(()));
    }
}
