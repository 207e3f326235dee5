//! `cargo xtask check-docs`: every link in the repository's Markdown files
//! resolves (also the first step of `cargo xtask test`).
//!
//! Every `*.md` file under the workspace is read, except under `.git/`,
//! `target/`, `fuzz/target/` and folders holding a `.git` of their own
//! (other worktrees, nested checkouts). In each, the inline links and
//! images (`[text](dest "title")`, `[text](<dest>)`), the reference-style
//! link definitions (`[label]: dest "title"`) and the full or collapsed
//! references (`[text][label]`, `[label][]`) are checked:
//!
//! - a relative destination must name a file or folder that exists,
//!   relative to the Markdown file (a leading `/` means the workspace
//!   root, as on GitHub), inside the workspace and outside `target/`;
//! - a `#fragment`, alone or after a `.md` path, must be the GitHub slug of
//!   a heading of that file (or an HTML `id`/`name` there); on other files
//!   only GitHub's line anchors (`#L10`, `#L10-L20`) are accepted;
//! - a reference must have a definition in the same file;
//! - `http(s)://`, `mailto:` and other URLs with a scheme are not fetched
//!   (the build machines have no internet); `--verbose` lists them.
//!
//! Fenced code blocks, inline code, HTML comments and backslash-escaped
//! brackets are not links. Indented code blocks are not recognised (they
//! look like list continuations); fence them.
//!
//! The parsing is a small subset of CommonMark aimed at the documents this
//! project writes, not a full Markdown parser: what it does not understand
//! it ignores rather than reports.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;

/// What `cargo xtask help` says of `check-docs`.
pub const USAGE: &str = "  check-docs [--verbose]
                        check every link of every *.md file of the repository:
                        relative files exist, #anchors match a heading's
                        GitHub slug, references are defined; URLs are not
                        fetched (--verbose lists them); part of `test`
";

/// `check-docs`'s options.
#[derive(Debug, Default)]
pub struct Options {
    /// List the external links too, and a summary.
    verbose: bool,
}

impl Options {
    /// Parses the command line.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Options::default();
        for a in args {
            match a.as_str() {
                "-v" | "--verbose" => o.verbose = true,
                other => bail!("check-docs: unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        Ok(o)
    }
}

/// Checks the repository's Markdown files; fails listing every broken link.
pub fn run(paths: &Paths, opts: &Options) -> Result<()> {
    let report = check_tree(&paths.root)?;
    if opts.verbose {
        for e in &report.external {
            println!("{e}");
        }
    }
    for b in &report.broken {
        println!("{b}");
    }
    if opts.verbose || !report.broken.is_empty() {
        println!(
            "check-docs: {} Markdown files, {} links checked, {} external (not fetched), {} broken",
            report.files,
            report.checked,
            report.external.len(),
            report.broken.len()
        );
    }
    if !report.broken.is_empty() {
        bail!("{} broken link(s) in Markdown files", report.broken.len());
    }
    Ok(())
}

/// The outcome of checking a tree.
#[derive(Debug, Default)]
struct Report {
    /// Markdown files read.
    files: usize,
    /// Links checked (external ones excluded).
    checked: usize,
    /// `file:line: external link, not fetched: URL` lines.
    external: Vec<String>,
    /// `file:line: broken link DEST: why` lines.
    broken: Vec<String>,
}

/// Folders under the root that are never scanned, nor valid link targets.
const SKIPPED: [&str; 2] = ["target", "fuzz/target"];

/// Checks every Markdown file under `root`.
fn check_tree(root: &Path) -> Result<Report> {
    let files = markdown_files(root)?;
    let mut docs: HashMap<PathBuf, Doc> = HashMap::new();
    for f in &files {
        let text = fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        docs.insert(f.clone(), Doc::parse(&text));
    }
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    for f in &files {
        let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
        for link in &docs[f].links {
            let at = format!("{rel}:{}", link.line);
            match check_link(root, f, &docs, link) {
                Verdict::Ok => report.checked += 1,
                Verdict::External => report
                    .external
                    .push(format!("{at}: external link, not fetched: {}", link.dest)),
                Verdict::Broken(why) => {
                    report.checked += 1;
                    report
                        .broken
                        .push(format!("{at}: broken link `{}`: {why}", link.dest));
                }
            }
        }
    }
    Ok(report)
}

/// The `*.md` files under `root`, sorted, skipping what is not ours.
fn markdown_files(root: &Path) -> Result<Vec<PathBuf>> {
    let skipped: Vec<PathBuf> = SKIPPED.iter().map(|s| root.join(s)).collect();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            // Symbolic links are not followed: no loops, no outside files.
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let foreign = path.join(".git").exists();
                if entry.file_name() != ".git" && !foreign && !skipped.contains(&path) {
                    stack.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What a link turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It resolves.
    Ok,
    /// A URL: not fetched.
    External,
    /// It does not resolve, and why.
    Broken(String),
}

/// Resolves one link of `file`.
fn check_link(root: &Path, file: &Path, docs: &HashMap<PathBuf, Doc>, link: &Link) -> Verdict {
    if let LinkKind::Reference { label } = &link.kind {
        if !docs[file].definitions.contains(label) {
            return Verdict::Broken(format!("no definition for reference [{label}]"));
        }
        // The definition is a link of its own, checked where it stands.
        return Verdict::Ok;
    }
    let dest = link.dest.as_str();
    if dest.is_empty() {
        return Verdict::Broken("empty destination".into());
    }
    if has_scheme(dest) {
        return Verdict::External;
    }
    let (path_part, fragment) = match dest.split_once('#') {
        Some((p, f)) => (p, Some(percent_decode(f))),
        None => (dest, None),
    };
    let path_part = path_part.split_once('?').map_or(path_part, |(p, _)| p);
    let target = if path_part.is_empty() {
        file.to_path_buf()
    } else {
        let decoded = percent_decode(path_part);
        let base = match decoded.strip_prefix('/') {
            Some(from_root) => root.join(from_root),
            None => file.parent().unwrap_or(root).join(&decoded),
        };
        let Some(normal) = normalize(&base) else {
            return Verdict::Broken("leaves the workspace".into());
        };
        if !normal.starts_with(root) {
            return Verdict::Broken("leaves the workspace".into());
        }
        if SKIPPED.iter().any(|s| normal.starts_with(root.join(s))) {
            return Verdict::Broken(
                "points into a build folder, which is not in the repository".into(),
            );
        }
        if !normal.exists() {
            return Verdict::Broken("no such file or folder".into());
        }
        normal
    };
    let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
        return Verdict::Ok;
    };
    if let Some(doc) = docs.get(&target) {
        if doc.anchors.contains(&fragment) {
            Verdict::Ok
        } else {
            Verdict::Broken(format!("no heading with anchor #{fragment}"))
        }
    } else if target.is_dir() || is_line_anchor(&fragment) {
        Verdict::Ok
    } else if target.extension().is_some_and(|e| e == "md") {
        // A Markdown file that was not scanned (a skipped folder).
        Verdict::Broken(format!("#{fragment} in a file that is not checked"))
    } else {
        Verdict::Broken(format!("#{fragment} is not a line anchor (#L10, #L10-L20)"))
    }
}

/// `scheme:` at the start (`https:`, `mailto:`, …), as in a URL.
fn has_scheme(dest: &str) -> bool {
    let Some((scheme, _)) = dest.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// GitHub's line anchors: `L10` or `L10-L20`.
fn is_line_anchor(fragment: &str) -> bool {
    let line = |s: &str| {
        s.strip_prefix('L')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    match fragment.split_once('-') {
        Some((a, b)) => line(a) && line(b),
        None => line(fragment),
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                // Two hex digits: at most 0xff.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `..` and `.` resolved lexically (no symbolic links followed); `None`
/// when `..` climbs above the file system's root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// One link found in a Markdown file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    /// 1-based line of the link's `[`.
    line: usize,
    /// The destination as written (angle brackets removed); for a
    /// reference, its label.
    dest: String,
    /// What kind of link.
    kind: LinkKind,
}

/// How a link is written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkKind {
    /// `[text](dest)` or `![alt](dest)`.
    Inline,
    /// `[label]: dest`.
    Definition,
    /// `[text][label]` or `[label][]`: needs a definition.
    Reference {
        /// The normalised label.
        label: String,
    },
}

/// What one Markdown file offers and asks for.
#[derive(Debug, Default)]
struct Doc {
    /// Heading slugs (with GitHub's `-1`, `-2` for repeats) and HTML ids.
    anchors: HashSet<String>,
    /// Normalised labels of the reference definitions.
    definitions: HashSet<String>,
    /// Every link, in order.
    links: Vec<Link>,
}

impl Doc {
    /// Reads a Markdown text.
    fn parse(text: &str) -> Doc {
        let mut doc = Doc::default();
        let masked = mask(text);
        let raw_lines: Vec<&str> = text.lines().collect();
        let masked_lines: Vec<&str> = masked.lines().collect();
        let mut slugger = Slugger::default();
        let mut in_fence = fence_lines(text);
        in_fence.resize(raw_lines.len(), false);
        for (i, raw) in raw_lines.iter().enumerate() {
            if in_fence[i] {
                continue;
            }
            if let Some(heading) = atx_heading(raw) {
                doc.anchors.insert(slugger.slug(&heading));
            } else if i > 0 && !in_fence[i - 1] && is_setext_underline(raw) {
                if let Some(heading) = setext_text(&raw_lines[..i]) {
                    doc.anchors.insert(slugger.slug(&heading));
                }
            }
            if let Some(m) = masked_lines.get(i) {
                html_ids(m, &mut doc.anchors);
            }
        }
        // Definitions first, then their lines are blanked so the label is
        // not taken for a shortcut reference.
        let mut body = String::with_capacity(masked.len());
        for (i, line) in masked.split('\n').enumerate() {
            match definition(line) {
                Some((label, dest)) => {
                    doc.definitions.insert(label);
                    doc.links.push(Link {
                        line: i + 1,
                        dest,
                        kind: LinkKind::Definition,
                    });
                    body.push_str(&" ".repeat(line.len()));
                }
                None => body.push_str(line),
            }
            body.push('\n');
        }
        doc.links.extend(inline_links(&body));
        doc.links.sort_by_key(|l| l.line);
        doc
    }
}

/// Per line of `text`: whether it belongs to a fenced code block (the
/// fences included).
fn fence_lines(text: &str) -> Vec<bool> {
    let mut out = Vec::new();
    let mut open: Option<(char, usize)> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let run = |c: char| t.chars().take_while(|&x| x == c).count();
        match open {
            Some((c, n)) => {
                out.push(true);
                if run(c) >= n && t.trim_start_matches(c).trim().is_empty() {
                    open = None;
                }
            }
            None => {
                let fence = ['`', '~']
                    .into_iter()
                    .map(|c| (c, run(c)))
                    .find(|&(_, n)| n >= 3);
                match fence {
                    // A backtick fence's info string has no backtick.
                    Some(('`', n)) if t[n..].contains('`') => out.push(false),
                    Some(f) => {
                        open = Some(f);
                        out.push(true);
                    }
                    None => out.push(false),
                }
            }
        }
    }
    out
}

/// `text` with everything that cannot hold a link turned into spaces
/// (newlines kept, so lines keep their numbers): fenced code blocks, code
/// spans, HTML comments and backslash escapes.
fn mask(text: &str) -> String {
    let fences = fence_lines(text);
    let mut chars: Vec<char> = Vec::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if fences.get(i).copied().unwrap_or(false) {
            chars.extend(line.chars().map(|_| ' '));
        } else {
            chars.extend(line.chars());
        }
        chars.push('\n');
    }
    chars.pop();
    let blank = |chars: &mut [char], from: usize, to: usize| {
        for c in &mut chars[from..to] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if chars.get(i + 1).is_some_and(|c| c.is_ascii_punctuation()) => {
                blank(&mut chars, i, i + 2);
                i += 2;
            }
            '`' => {
                let n = chars[i..].iter().take_while(|&&c| c == '`').count();
                match closing_backticks(&chars, i + n, n) {
                    Some(end) => {
                        blank(&mut chars, i, end);
                        i = end;
                    }
                    None => i += n,
                }
            }
            '<' if chars[i..].starts_with(&['<', '!', '-', '-']) => {
                let end = find(&chars, i + 4, &['-', '-', '>']).map_or(chars.len(), |e| e + 3);
                blank(&mut chars, i, end);
                i = end;
            }
            _ => i += 1,
        }
    }
    chars.into_iter().collect()
}

/// The end (exclusive) of the run of exactly `n` backticks closing a code
/// span that starts before `from`; a blank line ends the search.
fn closing_backticks(chars: &[char], from: usize, n: usize) -> Option<usize> {
    let mut i = from;
    while i < chars.len() {
        if chars[i] == '\n' && blank_line_follows(chars, i) {
            return None;
        }
        if chars[i] == '`' {
            let run = chars[i..].iter().take_while(|&&c| c == '`').count();
            if run == n {
                return Some(i + n);
            }
            i += run;
        } else {
            i += 1;
        }
    }
    None
}

/// Whether the line after the newline at `nl` is blank.
fn blank_line_follows(chars: &[char], nl: usize) -> bool {
    chars[nl + 1..]
        .iter()
        .take_while(|&&c| c != '\n')
        .all(|c| c.is_whitespace())
}

/// The first index at or after `from` where `pat` starts.
fn find(chars: &[char], from: usize, pat: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&i| chars[i..].starts_with(pat))
}

/// The text of an ATX heading (`## Text ##`), if `line` is one.
fn atx_heading(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let t = &line[indent..];
    let level = t.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let rest = rest.trim();
    // A closing sequence of #s, preceded by a space (or alone).
    let closed = rest.trim_end_matches('#');
    let text = if closed.is_empty() || closed.ends_with([' ', '\t']) {
        closed
    } else {
        rest
    };
    Some(text.trim().to_owned())
}

/// Whether `line` underlines a setext heading (`====` or `----`).
fn is_setext_underline(line: &str) -> bool {
    let t = line.trim();
    let indent = line.len() - line.trim_start_matches(' ').len();
    indent <= 3 && t.len() >= 2 && (t.chars().all(|c| c == '=') || t.chars().all(|c| c == '-'))
}

/// The paragraph a setext underline ends, if the lines before it are one.
fn setext_text(before: &[&str]) -> Option<String> {
    let para: Vec<&str> = before
        .iter()
        .rev()
        .take_while(|l| !l.trim().is_empty())
        .copied()
        .collect();
    let first = para.last()?;
    let t = first.trim_start();
    let starts_block = t.starts_with(['#', '>', '|', '-', '*', '+'])
        || t.starts_with("```")
        || t.starts_with("~~~")
        || t.split_once(". ")
            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()));
    if starts_block || para.iter().any(|l| l.trim_start().starts_with('|')) {
        return None;
    }
    let text: Vec<&str> = para.iter().rev().map(|l| l.trim()).collect();
    Some(text.join(" "))
}

/// Adds the `id="…"` and `name="…"` attributes of HTML tags on `line`.
fn html_ids(line: &str, anchors: &mut HashSet<String>) {
    let mut rest = line;
    while let Some(start) = rest.find('<') {
        let tag = &rest[start + 1..];
        let Some(end) = tag.find('>') else { return };
        let inside = &tag[..end];
        if inside.starts_with(|c: char| c.is_ascii_alphabetic()) {
            for attr in [" id=\"", " name=\""] {
                if let Some(v) = inside.find(attr).map(|p| &inside[p + attr.len()..]) {
                    if let Some(q) = v.find('"') {
                        anchors.insert(v[..q].to_owned());
                    }
                }
            }
        }
        rest = &tag[end..];
    }
}

/// GitHub's heading slugs: the rendered text lower-cased, everything but
/// letters, digits, spaces, `-` and `_` dropped, each space a `-`; a slug
/// seen before gets `-1`, `-2`, … (as github-slugger does).
#[derive(Debug, Default)]
struct Slugger {
    /// How often each base slug was handed out, minus one.
    seen: HashMap<String, usize>,
}

impl Slugger {
    /// The anchor of the next heading with this (Markdown) text.
    fn slug(&mut self, heading: &str) -> String {
        let base = slug(heading);
        let mut candidate = base.clone();
        while self.seen.contains_key(&candidate) {
            let n = self.seen.entry(base.clone()).or_default();
            *n += 1;
            candidate = format!("{base}-{n}");
        }
        self.seen.insert(candidate.clone(), 0);
        candidate
    }
}

/// The slug of one heading's Markdown text, before de-duplication.
fn slug(heading: &str) -> String {
    rendered_text(heading)
        .trim()
        .to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == '-' || c == '_' || c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Roughly the text GitHub renders for a heading's Markdown: link and image
/// destinations and HTML tags dropped (the punctuation of code spans and
/// emphasis goes in [`slug`] anyway).
fn rendered_text(md: &str) -> String {
    let chars: Vec<char> = md.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            // `](dest)`: keep the text, drop the destination.
            ']' if chars.get(i + 1) == Some(&'(') => match inline_destination(&chars, i + 2) {
                Some((_, end)) => i = end,
                None => {
                    out.push(']');
                    i += 1;
                }
            },
            '<' => match chars[i..].iter().position(|&c| c == '>') {
                Some(end)
                    if chars
                        .get(i + 1)
                        .is_some_and(|c| c.is_ascii_alphabetic() || *c == '/') =>
                {
                    i += end + 1
                }
                _ => {
                    out.push('<');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A reference definition line, `[label]: dest "title"`: its normalised
/// label and destination. Footnotes (`[^1]: …`) are not definitions.
fn definition(line: &str) -> Option<(String, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let t = line[indent..].strip_prefix('[')?;
    let close = t.find("]:")?;
    let label = &t[..close];
    if label.trim().is_empty() || label.starts_with('^') || label.contains(['[', ']']) {
        return None;
    }
    let rest = t[close + 2..].trim();
    let dest = if let Some(r) = rest.strip_prefix('<') {
        r[..r.find('>')?].to_owned()
    } else {
        rest.split_whitespace().next()?.to_owned()
    };
    Some((normalize_label(label), dest))
}

/// Reference labels match case-insensitively, runs of white space as one.
fn normalize_label(label: &str) -> String {
    label
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The inline links, images and full/collapsed references of a masked text.
fn inline_links(text: &str) -> Vec<Link> {
    let chars: Vec<char> = text.chars().collect();
    let mut line_of = Vec::with_capacity(chars.len());
    let mut line = 1;
    for &c in &chars {
        line_of.push(line);
        if c == '\n' {
            line += 1;
        }
    }
    let mut links = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '[' {
            i += 1;
            continue;
        }
        let Some(close) = matching_bracket(&chars, i) else {
            i += 1;
            continue;
        };
        match chars.get(close + 1) {
            Some('(') => {
                if let Some((dest, _)) = inline_destination(&chars, close + 2) {
                    links.push(Link {
                        line: line_of[i],
                        dest,
                        kind: LinkKind::Inline,
                    });
                }
                // The text may hold an image or link of its own.
                i += 1;
            }
            Some('[') => match matching_bracket(&chars, close + 1) {
                Some(end) => {
                    let inner: String = chars[close + 2..end].iter().collect();
                    let text: String = chars[i + 1..close].iter().collect();
                    let label = if inner.trim().is_empty() { text } else { inner };
                    let label = normalize_label(&label);
                    if !label.starts_with('^') && !label.is_empty() {
                        links.push(Link {
                            line: line_of[i],
                            dest: label.clone(),
                            kind: LinkKind::Reference { label },
                        });
                    }
                    i = end + 1;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    links
}

/// The `]` closing the `[` at `open` (nested brackets balanced), not
/// crossing a blank line.
fn matching_bracket(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &c) in chars.iter().enumerate().skip(open) {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            '\n' if blank_line_follows(chars, i) => return None,
            _ => {}
        }
    }
    None
}

/// Parses `dest "title")` starting just after `](`: the destination and
/// the index after the closing `)`. `None` when it is not a link.
fn inline_destination(chars: &[char], from: usize) -> Option<(String, usize)> {
    let mut i = from;
    let skip_ws = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    let dest: String;
    if chars.get(i) == Some(&'<') {
        let end = i + 1 + chars[i + 1..].iter().position(|&c| c == '>' || c == '\n')?;
        if chars[end] != '>' {
            return None;
        }
        dest = chars[i + 1..end].iter().collect();
        i = end + 1;
    } else {
        let start = i;
        let mut depth = 0usize;
        while let Some(&c) = chars.get(i) {
            if c.is_whitespace() || c.is_control() {
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
            i += 1;
        }
        dest = chars[start..i].iter().collect();
    }
    skip_ws(&mut i);
    // An optional title: "…", '…' or (…).
    if let Some(&q) = chars.get(i).filter(|&&c| c == '"' || c == '\'' || c == '(') {
        let close = if q == '(' { ')' } else { q };
        i += 1 + chars[i + 1..].iter().position(|&c| c == close)? + 1;
        skip_ws(&mut i);
    }
    (chars.get(i) == Some(&')')).then_some((dest, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(md: &str) -> Vec<(usize, String, LinkKind)> {
        Doc::parse(md)
            .links
            .into_iter()
            .map(|l| (l.line, l.dest, l.kind))
            .collect()
    }

    fn anchors(md: &str) -> Vec<String> {
        let mut a: Vec<String> = Doc::parse(md).anchors.into_iter().collect();
        a.sort();
        a
    }

    #[test]
    fn slugs_follow_github() {
        assert_eq!(slug("What works today"), "what-works-today");
        assert_eq!(
            slug("`ram` cfgstrings and injected faults"),
            "ram-cfgstrings-and-injected-faults"
        );
        assert_eq!(
            slug("Where answers differ from the kernel's `fileio` backstore, on purpose"),
            "where-answers-differ-from-the-kernels-fileio-backstore-on-purpose"
        );
        assert_eq!(
            slug("Hung commands: time-outs and aborts"),
            "hung-commands-time-outs-and-aborts"
        );
        // Each space becomes a dash, even where punctuation between them went.
        assert_eq!(slug("tcmu-rs — design"), "tcmu-rs--design");
        assert_eq!(slug("`ring_poll_us` (ours)"), "ring_poll_us-ours");
        assert_eq!(slug("C/fileio & 128k?"), "cfileio--128k");
        assert_eq!(slug("Übersicht 2.0"), "übersicht-20");
        assert_eq!(
            slug("See [the guide](docs/x.md#a) <em>now</em>"),
            "see-the-guide-now"
        );
        assert_eq!(slug("**Bold** and *emphasis*"), "bold-and-emphasis");
    }

    #[test]
    fn repeated_headings_get_numbered() {
        let mut s = Slugger::default();
        assert_eq!(s.slug("Testing"), "testing");
        assert_eq!(s.slug("Testing"), "testing-1");
        assert_eq!(s.slug("Testing"), "testing-2");
        // A heading that reads like a numbered one takes the next free slug.
        assert_eq!(s.slug("Testing 1"), "testing-1-1");
        assert_eq!(
            anchors("# A\n\n## B\n\n## B\n\ntext\n\n### `B`\n"),
            ["a", "b", "b-1", "b-2"]
        );
    }

    #[test]
    fn headings_atx_setext_and_html_ids() {
        assert_eq!(
            anchors("Title\n=====\n\nSub title\n---\n\n#NotAHeading\n\n## Closed ##\n\n<a id=\"here\"></a>\n"),
            ["closed", "here", "sub-title", "title"]
        );
        // Table separators and fenced code are no headings.
        assert_eq!(
            anchors("| a |\n|---|\n\n```\n# no\n```\n    # yes\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn inline_links_with_titles_and_angle_brackets() {
        let md = "See [one](a.md), [two](b.md \"Title\") and [three](<c d.md> 'x').\n\
                  ![img](pic.png (t)) [paren](https://x/y_(z)) [frag](#sec)\n";
        assert_eq!(
            links(md),
            [
                (1, "a.md".into(), LinkKind::Inline),
                (1, "b.md".into(), LinkKind::Inline),
                (1, "c d.md".into(), LinkKind::Inline),
                (2, "pic.png".into(), LinkKind::Inline),
                (2, "https://x/y_(z)".into(), LinkKind::Inline),
                (2, "#sec".into(), LinkKind::Inline),
            ]
        );
        // Link text over two lines, and an image inside a link.
        assert_eq!(
            links("a [long\ntext](x.md) [![i](i.png)](y.md)\n"),
            [
                (1, "x.md".into(), LinkKind::Inline),
                (2, "y.md".into(), LinkKind::Inline),
                (2, "i.png".into(), LinkKind::Inline),
            ]
        );
    }

    #[test]
    fn reference_links_and_definitions() {
        let md = "Use [tcmu-runner] and [the docs][Docs] or [Docs][] and [x][missing].\n\
                  \n\
                  [tcmu-runner]: https://github.com/open-iscsi/tcmu-runner\n\
                  [docs]: <docs/README.md> \"The docs\"\n\
                  [^1]: a footnote, not a link\n";
        let doc = Doc::parse(md);
        let mut defs: Vec<&String> = doc.definitions.iter().collect();
        defs.sort();
        assert_eq!(defs, ["docs", "tcmu-runner"]);
        assert_eq!(
            links(md),
            [
                (
                    1,
                    "docs".into(),
                    LinkKind::Reference {
                        label: "docs".into()
                    }
                ),
                (
                    1,
                    "docs".into(),
                    LinkKind::Reference {
                        label: "docs".into()
                    }
                ),
                (
                    1,
                    "missing".into(),
                    LinkKind::Reference {
                        label: "missing".into()
                    }
                ),
                (
                    3,
                    "https://github.com/open-iscsi/tcmu-runner".into(),
                    LinkKind::Definition
                ),
                (4, "docs/README.md".into(), LinkKind::Definition),
            ]
        );
    }

    #[test]
    fn code_is_not_linked() {
        let md = "```sh\n[a](in-fence.md)\n```\n\
                  ~~~\n[b](tilde.md)\n~~~\n\
                  `[c](span.md)` and ``[d](`x`.md)`` and \\[e](escaped.md)\n\
                  <!-- [f](comment.md) -->\n\
                  [g](real.md)\n";
        assert_eq!(links(md), [(9, "real.md".into(), LinkKind::Inline)]);
        // An unclosed backtick is a literal one.
        assert_eq!(
            links("a ` b [h](h.md)\n"),
            [(1, "h.md".into(), LinkKind::Inline)]
        );
    }

    #[test]
    fn brackets_that_are_not_links() {
        assert!(links("ram/[SIZE] [x] (y) [a] [b] f[i](\n\n[z]\n").is_empty());
    }

    #[test]
    fn helpers() {
        assert!(has_scheme("https://x") && has_scheme("mailto:a@b") && !has_scheme("a.md#x:y"));
        assert!(!has_scheme("./x:y.md"));
        assert!(
            is_line_anchor("L10")
                && is_line_anchor("L10-L20")
                && !is_line_anchor("L")
                && !is_line_anchor("top")
        );
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            Some(PathBuf::from("/a/c/d"))
        );
        assert_eq!(normalize(Path::new("/a/../..")), None);
    }

    /// A throwaway tree checked end to end.
    #[test]
    fn checks_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let write = |p: &str, s: &str| {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, s).unwrap();
        };
        write(
            "README.md",
            "# Top\n\n[ok](docs/a.md#part-two) [ok](docs/) [ok](#top) [ok](/Cargo.toml#L3)\n\
             [bad](docs/none.md) [bad](docs/a.md#nope) [bad](#nope) [bad](../outside.md)\n\
             [ext](https://example.invalid/) [ref][defined] [bad ref][undefined]\n\
             [bad](target/x.md) [bad](Cargo.toml#section)\n\n[defined]: docs/a.md\n",
        );
        write("Cargo.toml", "[workspace]\n");
        write(
            "docs/a.md",
            "# Part one\n\n## Part two\n\n[up](../README.md#top)\n",
        );
        write("target/x.md", "[ignored](nowhere.md)\n");
        write("other-worktree/.git", "gitdir: elsewhere\n");
        write("other-worktree/README.md", "[ignored](nowhere.md)\n");
        let report = check_tree(&root).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(
            report.external,
            ["README.md:5: external link, not fetched: https://example.invalid/"]
        );
        assert_eq!(
            report.broken,
            [
                "README.md:4: broken link `docs/none.md`: no such file or folder",
                "README.md:4: broken link `docs/a.md#nope`: no heading with anchor #nope",
                "README.md:4: broken link `#nope`: no heading with anchor #nope",
                "README.md:4: broken link `../outside.md`: leaves the workspace",
                "README.md:5: broken link `undefined`: no definition for reference [undefined]",
                "README.md:6: broken link `target/x.md`: points into a build folder, which is not in the repository",
                "README.md:6: broken link `Cargo.toml#section`: #section is not a line anchor (#L10, #L10-L20)",
            ]
        );
    }
}
