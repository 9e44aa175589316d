//! Clinical code validation, as ehrQL's `ehrql/codes.py` regexes (hand-written matchers: the
//! patterns are tiny and fixed), and the parsing behind `codelist_from_csv`.

use crate::qm::CodeSystem;

fn all(s: &[u8], f: impl Fn(u8) -> bool) -> bool {
    s.iter().all(|&b| f(b))
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}

fn upper_or_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// Whether `code` is a valid code of `system` (a full match of ehrQL's regex).
pub fn is_valid(system: CodeSystem, code: &str) -> bool {
    let b = code.as_bytes();
    match system {
        CodeSystem::SNOMEDCT | CodeSystem::DMD => (6..=18).contains(&b.len()) && matches!(b[0], b'1'..=b'9') && all(b, digit),
        CodeSystem::CTV3 => {
            // 5 alphanumerics, or 4/3/2 alphanumerics padded with dots to 5.
            b.len() == 5 && {
                let dots = b.iter().rev().take_while(|&&c| c == b'.').count();
                dots <= 3 && all(&b[..5 - dots], alnum)
            }
        }
        CodeSystem::ICD10 => {
            // [A-Z]\d{2}(X\d?|\d{0,2})?
            b.len() >= 3
                && b[0].is_ascii_uppercase()
                && digit(b[1])
                && digit(b[2])
                && match &b[3..] {
                    [] => true,
                    [b'X'] => true,
                    [b'X', d] => digit(*d),
                    rest => rest.len() <= 2 && all(rest, digit),
                }
        }
        CodeSystem::OPCS4 => (3..=4).contains(&b.len()) && b[0].is_ascii_uppercase() && b[0] != b'I' && all(&b[1..], digit),
        CodeSystem::BNF => {
            // [01][0-9]{6}[0-9A-Z]{2}([A-Z][0-9A-Z]){3}  |  2[0-3][0-9]{9}
            (b.len() == 15
                && matches!(b[0], b'0' | b'1')
                && all(&b[1..7], digit)
                && all(&b[7..9], upper_or_digit)
                && (0..3).all(|i| b[9 + 2 * i].is_ascii_uppercase() && upper_or_digit(b[10 + 2 * i])))
                || (b.len() == 11 && b[0] == b'2' && matches!(b[1], b'0'..=b'3') && all(&b[2..], digit))
        }
    }
}

/// Whether `prefix` may be searched for in a multi-code string of `system`
/// (`ICD10MultiCodeString` / `OPCS4MultiCodeString` prefix regexes).
pub fn is_valid_prefix(system: CodeSystem, prefix: &str) -> bool {
    let b = prefix.as_bytes();
    if b.is_empty() || !b[0].is_ascii_uppercase() {
        return false;
    }
    let rest = &b[1..];
    match system {
        // [A-Z](\d{0,2}|\d{3}|\d{4}|\d{2}X|\d{2}X\d)
        CodeSystem::ICD10 => match rest {
            r if r.len() <= 4 && all(r, digit) => true,
            [a, c, b'X'] => digit(*a) && digit(*c),
            [a, c, b'X', d] => digit(*a) && digit(*c) && digit(*d),
            _ => false,
        },
        CodeSystem::OPCS4 => b[0] != b'I' && rest.len() <= 3 && all(rest, digit),
        _ => false,
    }
}

/// A codelist read from CSV: codes (or code → category), in file order, codes stripped, empty
/// codes dropped, duplicates collapsed (the last category wins).
#[derive(Debug, Clone, PartialEq)]
pub enum Codelist {
    Codes(Vec<String>),
    Categorised(Vec<(String, String)>),
}

/// The pattern of ehrQL's regex for a code class (`SNOMEDCTCode.regex`), for definitions
/// that use it; the same language as [`is_valid`] (and [`is_valid_prefix`] for multi-code
/// strings), written compactly.
pub fn regex_pattern(class_name: &str) -> Option<&'static str> {
    Some(match class_name {
        "BNFCode" => r"[01][0-9]{6}[0-9A-Z]{2}([A-Z][0-9A-Z]){3}|2[0-3][0-9]{9}",
        "CTV3Code" => r"[0-9A-Za-z]{5}|[0-9A-Za-z]{4}\.|[0-9A-Za-z]{3}\.{2}|[0-9A-Za-z]{2}\.{3}",
        "ICD10Code" => r"[A-Z]\d{2}(?:X\d?|\d{0,2})?",
        "OPCS4Code" => r"[ABCDEFGHJKLMNOPQRSTUVWXYZ][0-9]{2,3}",
        "SNOMEDCTCode" | "DMDCode" => r"[1-9][0-9]{5,17}",
        "ICD10MultiCodeString" => r"[A-Z](?:\d{0,2}|\d{3}|\d{4}|\d{2}X|\d{2}X\d)",
        "OPCS4MultiCodeString" => r"[ABCDEFGHJKLMNOPQRSTUVWXYZ][0-9]{0,3}",
        _ => return None,
    })
}

/// ehrQL's `codelist_from_csv_lines`: the codelist in CSV `text` (already decoded and with
/// universal newlines, as Python's `open()` gives it), read as `csv.DictReader(restval="")`
/// reads it. The error is ehrQL's `CodelistError` message.
pub fn codelist_from_text(text: &str, column: &str, category_column: Option<&str>) -> Result<Codelist, String> {
    let rows = crate::csv::parse(text).map_err(|(row, message)| format!("line {row}: {message}"))?;
    let Some((header, body)) = rows.split_first() else {
        return Err(format!("No column '{column}' in CSV"));
    };
    let find = |name: &str| header.iter().position(|h| h == name).ok_or_else(|| format!("No column '{name}' in CSV"));
    let code_i = find(column)?;
    let cat_i = category_column.map(find).transpose()?;
    let get = |row: &Vec<String>, i: usize| row.get(i).map(|s| s.trim().to_string()).unwrap_or_default();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut pairs: Vec<(String, String)> = vec![];
    for row in body.iter().filter(|r| !r.is_empty()) {
        let code = get(row, code_i);
        let category = cat_i.map(|ci| get(row, ci)).unwrap_or_default();
        match index.get(&code) {
            Some(&i) => pairs[i].1 = category,
            None => {
                index.insert(code.clone(), pairs.len());
                pairs.push((code, category));
            }
        }
    }
    // `code_map.pop('', None)`: an empty code is dropped wherever it appeared.
    pairs.retain(|(code, _)| !code.is_empty());
    Ok(match cat_i {
        None => Codelist::Codes(pairs.into_iter().map(|(c, _)| c).collect()),
        Some(_) => Codelist::Categorised(pairs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_patterns() {
        assert!(is_valid(CodeSystem::SNOMEDCT, "44054006"));
        assert!(!is_valid(CodeSystem::SNOMEDCT, "ABC123"));
        assert!(!is_valid(CodeSystem::SNOMEDCT, "04405400"));
        assert!(is_valid(CodeSystem::CTV3, "XaBVJ"));
        assert!(is_valid(CodeSystem::CTV3, "G80.."));
        assert!(!is_valid(CodeSystem::CTV3, "G8..."[..4].as_ref()));
        for ok in ["A01", "A012", "A0123", "A01X", "A01X2", "I269"] {
            assert!(is_valid(CodeSystem::ICD10, ok), "{ok}");
        }
        for bad in ["A1", "A01234", "a01", "A01XX"] {
            assert!(!is_valid(CodeSystem::ICD10, bad), "{bad}");
        }
        assert!(is_valid(CodeSystem::OPCS4, "K401"));
        assert!(!is_valid(CodeSystem::OPCS4, "I401"));
        assert!(is_valid(CodeSystem::BNF, "0101010G0AAABAB"));
        assert!(is_valid(CodeSystem::BNF, "23965909711"));
        assert!(is_valid_prefix(CodeSystem::ICD10, "N17"));
        assert!(is_valid_prefix(CodeSystem::ICD10, "I"));
        assert!(!is_valid_prefix(CodeSystem::ICD10, "17N"));
    }
}
