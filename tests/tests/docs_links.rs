//! The README is the front door and `docs/` is behind it: every relative link and image
//! in `README.md` and `docs/**/*.md` must point at a file of the repository (and, with a
//! `#fragment` into a Markdown file, at a heading or anchor of it), the README stays a
//! front door (at most 250 lines), and every page directly in `docs/` can be reached from
//! the README by following links.
//!
//! The Markdown is scanned by hand (no parser crate): fenced code blocks and code spans
//! are skipped, and inline links, images, reference definitions and HTML `src`/`href`
//! attributes are read. Heading anchors follow GitHub's rule (lower case, punctuation
//! dropped, spaces to hyphens, `-1`, `-2`, … for repeats).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use nodewatch_tests::workspace_root;

/// The README's budget: what it is, a picture, the commands, the links. The rest is docs/.
const README_MAX_LINES: usize = 250;

/// One link found in a Markdown file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    /// 1-based line of the file where the link's target starts.
    line: usize,
    target: String,
}

/// A Markdown file with the links it holds and the anchors it defines.
#[derive(Debug)]
struct Page {
    links: Vec<Link>,
    anchors: BTreeSet<String>,
}

/// A line that opens or closes a fenced code block: up to three spaces, then three or
/// more backticks or tildes. Returns the fence character and its length.
fn fence(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let run = rest.chars().take_while(|&c| c == ch).count();
    (run >= 3).then_some((ch, run))
}

/// The file's text outside fenced code blocks, as blocks (runs of non-blank lines), each
/// line with its 1-based number. Code spans may wrap lines inside a block, not across.
fn blocks(text: &str) -> Vec<Vec<(usize, String)>> {
    let mut blocks = Vec::new();
    let mut current: Vec<(usize, String)> = Vec::new();
    let mut open_fence: Option<(char, usize)> = None;
    for (index, line) in text.lines().enumerate() {
        if let Some((ch, len)) = open_fence {
            if let Some((c, l)) = fence(line)
                && c == ch
                && l >= len
                && line.trim().chars().all(|x| x == ch)
            {
                open_fence = None;
            }
            continue;
        }
        if let Some(opened) = fence(line) {
            open_fence = Some(opened);
            blocks.push(std::mem::take(&mut current));
            continue;
        }
        if line.trim().is_empty() {
            blocks.push(std::mem::take(&mut current));
        } else {
            current.push((index + 1, line.to_string()));
        }
    }
    blocks.push(current);
    blocks.retain(|b| !b.is_empty());
    blocks
}

/// A block's text with code spans blanked out (replaced by spaces, so offsets and line
/// breaks stay), as chars with the line each comes from.
fn without_code_spans(block: &[(usize, String)]) -> Vec<(char, usize)> {
    let mut chars: Vec<(char, usize)> = Vec::new();
    for (line, text) in block {
        chars.extend(text.chars().map(|c| (c, *line)));
        chars.push(('\n', *line));
    }
    let mut i = 0;
    while i < chars.len() {
        if chars[i].0 == '\\' {
            i += 2;
            continue;
        }
        if chars[i].0 != '`' {
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|(c, _)| *c == '`').count();
        // The closing run has exactly the same length.
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j].0 == '`' {
                let r = chars[j..].iter().take_while(|(c, _)| *c == '`').count();
                if r == run {
                    close = Some(j);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                for c in &mut chars[i..j + run] {
                    if c.0 != '\n' {
                        c.0 = ' ';
                    }
                }
                i = j + run;
            }
            // An unmatched run is literal text.
            None => i += run,
        }
    }
    chars
}

/// The destination of an inline link starting right after `](`: `<…>` or a bare target
/// with balanced parentheses, then an optional title.
fn destination(chars: &[(char, usize)], start: usize) -> Option<(String, usize)> {
    let mut i = start;
    while i < chars.len() && chars[i].0.is_whitespace() {
        i += 1;
    }
    let line = chars.get(i)?.1;
    let mut target = String::new();
    if chars[i].0 == '<' {
        i += 1;
        while i < chars.len() && chars[i].0 != '>' {
            target.push(chars[i].0);
            i += 1;
        }
        return (i < chars.len()).then_some((target, line));
    }
    let mut depth = 0usize;
    while i < chars.len() {
        let c = chars[i].0;
        if c.is_whitespace() {
            break;
        }
        if c == '(' {
            depth += 1;
        } else if c == ')' {
            if depth == 0 {
                break;
            }
            depth -= 1;
        }
        target.push(c);
        i += 1;
    }
    (!target.is_empty()).then_some((target, line))
}

/// Every link and image target in a Markdown text.
fn links(text: &str) -> Vec<Link> {
    let mut found = Vec::new();
    for block in blocks(text) {
        let chars = without_code_spans(&block);
        for i in 0..chars.len().saturating_sub(1) {
            if chars[i].0 == ']'
                && chars[i + 1].0 == '('
                && (i == 0 || chars[i - 1].0 != '\\')
                && let Some((target, line)) = destination(&chars, i + 2)
            {
                found.push(Link { line, target });
            }
        }
        let flat: String = chars.iter().map(|(c, _)| *c).collect();
        let lines_of: Vec<usize> = chars.iter().map(|(_, l)| *l).collect();
        // Reference definitions: `[label]: target` at the start of a line.
        for (offset, line) in line_starts(&flat) {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix('[')
                && let Some(end) = rest.find("]:")
                && !rest[..end].contains(']')
            {
                let target = rest[end + 2..].split_whitespace().next().unwrap_or("");
                let target = target.trim_start_matches('<').trim_end_matches('>');
                if !target.is_empty() {
                    found.push(Link {
                        line: lines_of[offset],
                        target: target.to_string(),
                    });
                }
            }
        }
        // HTML: <img src="…">, <a href="…">.
        for attribute in ["src=\"", "href=\""] {
            let mut from = 0;
            while let Some(pos) = flat[from..].find(attribute) {
                let begin = from + pos + attribute.len();
                let Some(len) = flat[begin..].find('"') else {
                    break;
                };
                let char_index = flat[..begin].chars().count();
                found.push(Link {
                    line: lines_of[char_index.min(lines_of.len() - 1)],
                    target: flat[begin..begin + len].to_string(),
                });
                from = begin + len;
            }
        }
    }
    found
}

/// Byte offsets (as char indexes) and text of each line of `flat`.
fn line_starts(flat: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut char_index = 0;
    for line in flat.split('\n') {
        out.push((char_index, line));
        char_index += line.chars().count() + 1;
    }
    out.pop();
    out
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    // Link and image syntax shows only its text.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find("](") {
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        text.push_str(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown text defines: ATX headings (with repeats numbered as GitHub
/// does) and explicit `id="…"` / `name="…"` attributes.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for block in blocks(text) {
        for (_, line) in &block {
            let trimmed = line.trim_start();
            let hashes = trimmed.chars().take_while(|&c| c == '#').count();
            if (1..=6).contains(&hashes)
                && line.len() - trimmed.len() <= 3
                && trimmed[hashes..].starts_with(' ')
            {
                let title = trimmed[hashes..].trim().trim_end_matches('#').trim();
                let base = slug(title);
                let count = seen.entry(base.clone()).or_insert(0);
                out.insert(if *count == 0 {
                    base.clone()
                } else {
                    format!("{base}-{count}")
                });
                *count += 1;
            }
            for attribute in ["id=\"", "name=\""] {
                let mut from = 0;
                while let Some(pos) = line[from..].find(attribute) {
                    let begin = from + pos + attribute.len();
                    let Some(len) = line[begin..].find('"') else {
                        break;
                    };
                    out.insert(line[begin..begin + len].to_string());
                    from = begin + len;
                }
            }
        }
    }
    out
}

/// A target that leaves the repository's files: another site, mail, a GitHub-relative
/// URL that is not a path.
fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("mailto:")
        || lower.starts_with("//")
}

/// `path` with `.` and `..` resolved without touching the file system; `None` when it
/// climbs out of `root`.
fn normalize(root: &Path, path: &Path) -> Option<PathBuf> {
    let relative = path.strip_prefix(root).ok()?;
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(
        parts
            .iter()
            .fold(root.to_path_buf(), |p, part| p.join(part)),
    )
}

/// README.md and every Markdown file under docs/.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut files);
    files.sort();
    files
}

/// Reads and scans the README and every page of docs/.
fn pages(root: &Path) -> BTreeMap<PathBuf, Page> {
    markdown_files(root)
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let page = Page {
                links: links(&text),
                anchors: anchors(&text),
            };
            (path, page)
        })
        .collect()
}

/// The file a relative link points at, and its fragment.
fn resolve(root: &Path, from: &Path, target: &str) -> Result<(PathBuf, Option<String>), String> {
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment.to_string())),
        None => (target, None),
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() {
        return Ok((from.to_path_buf(), fragment));
    }
    let base = if let Some(absolute) = path.strip_prefix('/') {
        // GitHub reads a leading slash as the repository's root.
        root.join(absolute)
    } else {
        from.parent().unwrap_or(root).join(path)
    };
    let resolved = normalize(root, &base).ok_or_else(|| "leaves the repository".to_string())?;
    if !resolved.exists() {
        return Err("no such file".into());
    }
    Ok((resolved, fragment))
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn relative_links_resolve() {
    let root = workspace_root();
    let pages = pages(&root);
    let mut broken = Vec::new();
    let mut checked = 0;
    for (path, page) in &pages {
        for link in &page.links {
            if is_external(&link.target) {
                continue;
            }
            checked += 1;
            let at = format!("{}:{}: {}", relative(&root, path), link.line, link.target);
            match resolve(&root, path, &link.target) {
                Err(why) => broken.push(format!("{at}: {why}")),
                Ok((file, Some(fragment))) if !fragment.is_empty() => {
                    // Fragments are checked where we know the anchors: our Markdown.
                    if let Some(target) = pages.get(&file)
                        && !target.anchors.contains(&fragment)
                    {
                        broken.push(format!("{at}: no heading or anchor #{fragment}"));
                    }
                }
                Ok(_) => {}
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} relative links found: is the scanner broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn readme_is_a_front_door() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; at most {README_MAX_LINES}: move detail to docs/"
    );
}

#[test]
fn every_doc_is_reachable_from_the_readme() {
    let root = workspace_root();
    let pages = pages(&root);
    let mut reached = BTreeSet::new();
    let mut queue = vec![root.join("README.md")];
    while let Some(path) = queue.pop() {
        if !reached.insert(path.clone()) {
            continue;
        }
        let Some(page) = pages.get(&path) else {
            continue;
        };
        for link in &page.links {
            if is_external(&link.target) {
                continue;
            }
            if let Ok((file, _)) = resolve(&root, &path, &link.target)
                && pages.contains_key(&file)
            {
                queue.push(file);
            }
        }
    }
    let docs = root.join("docs");
    let unreached: Vec<String> = pages
        .keys()
        .filter(|p| p.parent() == Some(docs.as_path()) && !reached.contains(*p))
        .map(|p| relative(&root, p))
        .collect();
    assert!(
        unreached.is_empty(),
        "not reachable from README.md by links: {unreached:?}"
    );
    let direct = pages
        .keys()
        .filter(|p| p.parent() == Some(docs.as_path()))
        .count();
    assert!(
        direct >= 8,
        "docs/ holds {direct} pages directly; the README promises at least eight topics"
    );
}

#[test]
fn scanner_reads_markdown_as_github_does() {
    let text = "# Top\n\
        See [a](docs/a.md#part-two) and ![pic](images/x.png \"title\").\n\
        `[not](a-link.md)` and\n\
        ``[nor](this.md)\n\
        across``.\n\
        \n\
        ```sh\n\
        [inside](code.md)\n\
        ```\n\
        [ref]: <docs/b.md>\n\
        <img src=\"docs/c.svg\" alt=\"\">\n\
        [paren](docs/f(1).md)\n\
        ## Part two: `[lora.radio]` & more\n\
        ## Part two: `[lora.radio]` & more\n";
    let targets: Vec<String> = links(text).into_iter().map(|l| l.target).collect();
    assert_eq!(
        targets,
        [
            "docs/a.md#part-two",
            "images/x.png",
            "docs/f(1).md",
            "docs/b.md",
            "docs/c.svg"
        ]
    );
    let found = anchors(text);
    assert!(found.contains("top"), "{found:?}");
    assert!(found.contains("part-two-loraradio--more"), "{found:?}");
    assert!(found.contains("part-two-loraradio--more-1"), "{found:?}");
    assert_eq!(
        slug("Differences from node_exporter"),
        "differences-from-node_exporter"
    );
    assert_eq!(slug("Stop → alert latency"), "stop--alert-latency");
    assert_eq!(slug("[Docs](x.md) index"), "docs-index");
}
