//! Output path patterns: upstream's validation rules (pipeline.md §1.5) and its matching
//! semantics, where `*` matches within one path segment only.

/// File types that may be moderately_sensitive (upstream `LEVEL4_FILE_TYPES`).
pub const LEVEL4_FILE_TYPES: &[&str] = &[".csv", ".jpg", ".jpeg", ".png", ".svg", ".svgz", ".html", ".txt", ".log", ".json", ".md"];

/// The suffix of the last path component, as Python's `PurePath.suffix` computes it:
/// `a.csv` → `.csv`, `.hidden` → ``, `a.` → ``.
pub fn suffix(path: &str) -> &str {
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    match name.rfind('.') {
        Some(i) if i > 0 && i < name.len() - 1 => &name[i..],
        _ => "",
    }
}

/// Python's `posixpath.normpath`.
pub fn posix_normpath(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let initial_slashes = if path.starts_with("//") && !path.starts_with("///") {
        2
    } else if path.starts_with('/') {
        1
    } else {
        0
    };
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." {
            continue;
        }
        if comp != ".." || (initial_slashes == 0 && parts.is_empty()) || parts.last() == Some(&"..") {
            parts.push(comp);
        } else if !parts.is_empty() {
            parts.pop();
        }
    }
    let joined = parts.join("/");
    let out = format!("{}{}", "/".repeat(initial_slashes), joined);
    if out.is_empty() { ".".to_string() } else { out }
}

/// Checks one output pattern; the error is the reason upstream gives after
/// `Output path <p> is invalid: `.
pub fn validate_pattern(pattern: &str, moderately_sensitive: bool) -> Result<(), String> {
    if pattern.contains('\\') {
        return Err("contains back slashes (use forward slashes only)".into());
    }
    for expr in ["**", "?", "["] {
        if pattern.contains(expr) {
            return Err(format!("contains '{expr}' (only the * wildcard character is supported)"));
        }
    }
    let suffix = suffix(pattern);
    if suffix.is_empty() || suffix.ends_with('*') {
        return Err("output paths must have a file type extension at the end".into());
    }
    if moderately_sensitive && !LEVEL4_FILE_TYPES.contains(&suffix) {
        return Err(format!("{} is not an allowed file type for moderately_sensitive outputs", pattern.trim_end_matches('/')));
    }
    if posix_normpath(pattern) != pattern {
        return Err("is not in standard form (contains double slashes or '..' elements)".into());
    }
    if pattern == "metadata" || pattern.starts_with("metadata/") {
        return Err("should not include the metadata directory".into());
    }
    let bytes = pattern.as_bytes();
    let windows_drive = bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'/';
    if pattern.starts_with('/') || windows_drive {
        return Err("is an absolute path".into());
    }
    Ok(())
}

/// Whether a relative file path (with `/` separators) matches a pattern: `*` matches any
/// run of characters other than `/`, everything else matches itself.
pub fn matches(pattern: &str, path: &str) -> bool {
    let mut pat_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pat_segments.next(), path_segments.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if segment_matches(p.as_bytes(), s.as_bytes()) => {}
            _ => return false,
        }
    }
}

/// Classic wildcard matching of one segment, backtracking to the last `*`.
fn segment_matches(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_like_python() {
        assert_eq!(suffix("output/a.csv"), ".csv");
        assert_eq!(suffix("output/a.csv.gz"), ".gz");
        assert_eq!(suffix("output/.hidden"), "");
        assert_eq!(suffix("output/a."), "");
        assert_eq!(suffix("output/*"), "");
        assert_eq!(suffix("output/a.*"), ".*");
        assert_eq!(suffix("out.d/file"), "");
    }

    #[test]
    fn normpath_like_python() {
        assert_eq!(posix_normpath("a//b"), "a/b");
        assert_eq!(posix_normpath("a/./b"), "a/b");
        assert_eq!(posix_normpath("a/../b"), "b");
        assert_eq!(posix_normpath("../a"), "../a");
        assert_eq!(posix_normpath("//a"), "//a");
        assert_eq!(posix_normpath("///a"), "/a");
        assert_eq!(posix_normpath("a/"), "a");
        assert_eq!(posix_normpath(""), ".");
    }

    #[test]
    fn star_stays_in_one_segment() {
        assert!(matches("output/*.csv", "output/a.csv"));
        assert!(matches("output/a*b*.csv", "output/aXbY.csv"));
        assert!(!matches("output/*.csv", "output/sub/a.csv"));
        assert!(!matches("output/*.csv", "output/a.csv.gz"));
        assert!(matches("output/*/x.csv", "output/sub/x.csv"));
        assert!(!matches("output/a.csv", "output/b.csv"));
        assert!(matches("*.csv", "a.csv"));
        assert!(!matches("*.csv", "d/a.csv"));
    }

    #[test]
    fn validation_reasons_in_upstream_order() {
        let v = |p, m| validate_pattern(p, m).err();
        assert_eq!(v("output\\a.csv", false).unwrap(), "contains back slashes (use forward slashes only)");
        assert!(v("output/**/a.csv", false).unwrap().contains("'**'"));
        assert!(v("output/a?.csv", false).unwrap().contains("'?'"));
        assert!(v("output/[ab].csv", false).unwrap().contains("'['"));
        assert!(v("output/a", false).unwrap().contains("file type extension"));
        assert!(v("output/a.*", false).unwrap().contains("file type extension"));
        assert!(v("output/a.csv.gz", true).unwrap().contains("not an allowed file type"));
        assert!(v("output//a.csv", false).unwrap().contains("standard form"));
        assert!(v("output/../a.csv", false).unwrap().contains("standard form"));
        assert!(v("metadata/a.csv", false).unwrap().contains("metadata directory"));
        assert!(v("/abs/a.csv", false).unwrap().contains("absolute"));
        assert!(v("c:/abs/a.csv", false).unwrap().contains("absolute"));
        assert_eq!(v("output/*.csv", true), None);
        assert_eq!(v("output/a.csv.gz", false), None);
    }
}
