//! The two path helpers of Go's `path/filepath` that node_exporter 1.5's textfile
//! collector relies on: `Glob` (its directory may be a pattern such as
//! `/var/lib/node-exporter/*`) and `Clean` (the `file` label and default HELP hold
//! `filepath.Join(dir, name)`, which cleans the path lexically).

use std::path::Path;

/// The pattern is malformed (Go's `ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern;

/// Cleans a path lexically as Go's `filepath.Clean`: one slash between elements, no `.`
/// elements, `..` folded into the element before it, no `..` right after the root, no
/// trailing slash; `.` for an empty result.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut elements: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => match elements.last() {
                Some(&last) if last != ".." => {
                    elements.pop();
                }
                _ if rooted => {}
                _ => elements.push(".."),
            },
            _ => elements.push(element),
        }
    }
    let joined = elements.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Join(dir, name)`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        clean(name)
    } else {
        clean(&format!("{dir}/{name}"))
    }
}

fn has_meta(path: &str) -> bool {
    path.contains(['*', '?', '[', '\\'])
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    AnyChar,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Compiles one path element's pattern (`*`, `?`, `[…]` with `^` and ranges, `\`
/// escapes), as Go's `filepath.Match` reads it.
fn compile(pattern: &str) -> Result<Vec<Token>, BadPattern> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => Token::AnyRun,
            '?' => Token::AnyChar,
            '\\' => Token::Literal(chars.next().ok_or(BadPattern)?),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                let class_char =
                    |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| match chars.next() {
                        None | Some('-' | ']') => Err(BadPattern),
                        Some('\\') => chars.next().ok_or(BadPattern),
                        Some(c) => Ok(c),
                    };
                loop {
                    if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                        break;
                    }
                    let low = class_char(&mut chars)?;
                    let high = if chars.next_if_eq(&'-').is_some() {
                        class_char(&mut chars)?
                    } else {
                        low
                    };
                    ranges.push((low, high));
                }
                Token::Class { negated, ranges }
            }
            c => Token::Literal(c),
        });
    }
    Ok(tokens)
}

fn matches(tokens: &[Token], name: &[char]) -> bool {
    match tokens.split_first() {
        None => name.is_empty(),
        Some((Token::AnyRun, rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
        Some((token, rest)) => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let one = match token {
                Token::Literal(l) => *l == c,
                Token::AnyChar => c != '/',
                Token::Class { negated, ranges } => {
                    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                }
                Token::AnyRun => false,
            };
            one && matches(rest, name_rest)
        }
    }
}

/// Expands `pattern` as Go's `filepath.Glob`: the matching paths, sorted within each
/// directory; a pattern without metacharacters gives itself if it exists. Unreadable
/// directories are skipped, as in Go.
pub fn glob(pattern: &str) -> Result<Vec<String>, BadPattern> {
    for element in pattern.split('/') {
        compile(element)?;
    }
    if !has_meta(pattern) {
        return Ok(if std::fs::symlink_metadata(pattern).is_ok() {
            vec![pattern.to_string()]
        } else {
            Vec::new()
        });
    }
    let (dir, file) = match pattern.rfind('/') {
        Some(slash) => (&pattern[..=slash], &pattern[slash + 1..]),
        None => ("", pattern),
    };
    let dir = match dir {
        "" => ".",
        "/" => "/",
        _ => &dir[..dir.len() - 1],
    };
    let dirs = if !has_meta(dir) {
        vec![dir.to_string()]
    } else if dir == pattern {
        return Err(BadPattern);
    } else {
        glob(dir)?
    };
    let tokens = compile(file)?;
    let mut found = Vec::new();
    for dir in dirs {
        if !Path::new(&dir).is_dir() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let chars: Vec<char> = name.chars().collect();
            if matches(&tokens, &chars) {
                found.push(join(&dir, &name));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        for (path, cleaned) in [
            (
                "/var/lib/node-exporter/x.prom",
                "/var/lib/node-exporter/x.prom",
            ),
            ("/tmp//d4/../d4/g.prom", "/tmp/d4/g.prom"),
            ("./d4//g.prom", "d4/g.prom"),
            ("a/b/../../..", ".."),
            ("/../x", "/x"),
            ("", "."),
            ("/", "/"),
            ("dir/", "dir"),
        ] {
            assert_eq!(clean(path), cleaned, "{path}");
        }
        assert_eq!(join("./d4/", "g.prom"), "d4/g.prom");
    }

    fn matches_str(pattern: &str, name: &str) -> Result<bool, BadPattern> {
        let chars: Vec<char> = name.chars().collect();
        Ok(matches(&compile(pattern)?, &chars))
    }

    #[test]
    fn matches_like_go() {
        for (pattern, name, expected) in [
            ("*", "anything.prom", true),
            ("*", ".hidden", true),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("[\\]]", "]", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("node-[0-9]*", "node-7-exporter", true),
        ] {
            assert_eq!(matches_str(pattern, name), Ok(expected), "{pattern} {name}");
        }
        for bad in ["[", "[a-", "[]", "a\\", "[a-]"] {
            assert_eq!(matches_str(bad, "x"), Err(BadPattern), "{bad}");
        }
    }

    #[test]
    fn globs_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().to_str().expect("utf8 tempdir");
        for d in ["d3", "d4", "e1"] {
            std::fs::create_dir(tmp.path().join(d)).expect("mkdir");
        }
        std::fs::write(tmp.path().join("d5"), "a file").expect("write");
        assert_eq!(
            glob(&format!("{base}/d[0-9]")),
            Ok(vec![
                format!("{base}/d3"),
                format!("{base}/d4"),
                format!("{base}/d5")
            ])
        );
        assert_eq!(
            glob(&format!("{base}/*/")).map(|v| v.len()),
            Ok(0),
            "Go matches nothing against an empty last element"
        );
        assert_eq!(glob(&format!("{base}/x*")), Ok(vec![]));
        assert_eq!(glob(&format!("{base}/d4")), Ok(vec![format!("{base}/d4")]));
        assert_eq!(glob(&format!("{base}/missing")), Ok(vec![]));
        assert_eq!(glob(&format!("{base}/[")), Err(BadPattern));
        assert_eq!(
            glob(&format!("{base}/*/..")),
            Ok(vec![]),
            "'..' is matched literally against names"
        );
    }
}
