//! The documentation against the repository and the binaries (issue 31).
//!
//! The README is a five-minute start and the rest lives in `docs/*.md`, one
//! topic a page, with links between them. Text that moves leaves links
//! pointing nowhere, and examples drift from the binaries as commands are
//! renamed. So, for README.md and every docs/*.md:
//!
//! - every relative link (`[text](path)`, `[text](path#anchor)`, images too)
//!   names a file that exists, and its anchor a heading of that file, slugged
//!   as GitHub does;
//! - every `difflog SUB` and `difflog-sync SUB` that starts a command in a
//!   shell block (```` ```sh ````, ```` ```console ````, a bare ```` ``` ````;
//!   also `cargo run --bin difflog -- SUB` and a binary's path) is a real
//!   subcommand, read from the built binaries' `--help` ("Commands:"), and so
//!   is a nested one (`difflog bench compare`);
//! - the README links every docs page, and the docs index every other page.
//!
//! The checks are functions over text, so the tests at the end feed them a
//! broken link and made-up subcommands and see them fail.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, then docs/*.md in name order.
fn doc_files() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "docs/ holds only {docs:?}");
    let mut files = vec![repo().join("README.md")];
    files.extend(docs);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn shown(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A fenced block: its info string (`sh`, `console`, ``) and its lines.
struct Block {
    info: String,
    lines: Vec<String>,
}

/// Splits Markdown into the text outside fenced blocks (fence lines blanked,
/// so line counts stay) and the fenced blocks. Indented fences (inside list
/// items) count.
fn split_fences(text: &str) -> (String, Vec<Block>) {
    let mut prose = String::new();
    let mut blocks = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let fence = ["```", "~~~"].into_iter().find(|f| trimmed.starts_with(f));
        match (&mut open, fence) {
            (None, Some(f)) => {
                let info = trimmed.trim_start_matches(f.chars().next().unwrap()).trim();
                let block = Block {
                    info: info.to_string(),
                    lines: Vec::new(),
                };
                open = Some((f.to_string(), block));
            }
            (Some((f, _)), Some(g))
                if f == g && trimmed.trim_start_matches(['`', '~']).trim().is_empty() =>
            {
                blocks.push(open.take().unwrap().1);
            }
            (Some((_, block)), _) => block.lines.push(line.to_string()),
            (None, None) => {
                prose.push_str(line);
            }
        }
        prose.push('\n');
    }
    if let Some((_, block)) = open {
        blocks.push(block);
    }
    (prose, blocks)
}

/// The prose with inline code spans blanked: a `](` inside code is no link.
/// A span is a run of backticks up to the next run of the same length within
/// its paragraph; a lone backtick stays.
fn blank_code_spans(prose: &str) -> String {
    let chars: Vec<char> = prose.chars().collect();
    let mut out = String::with_capacity(prose.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&c| c == '`').count();
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '\n' && chars.get(j + 1) == Some(&'\n') {
                break;
            }
            if chars[j] == '`' {
                let other = chars[j..].iter().take_while(|&&c| c == '`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(c) => {
                out.push_str("``");
                out.extend(
                    chars[i + run..c]
                        .iter()
                        .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
                );
                i = c + run;
            }
            None => {
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// The targets of every inline link and image in the prose.
fn link_targets(text: &str) -> Vec<String> {
    let (prose, _) = split_fences(text);
    let prose = blank_code_spans(&prose);
    let mut targets = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        targets.push(after[..end].to_string());
        rest = &after[end..];
    }
    targets
}

/// A heading's anchor as GitHub makes it: lower case, punctuation other than
/// `-` and `_` dropped (backticks, colons, parentheses, …), each space a `-`.
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a Markdown file: its headings outside fenced blocks,
/// repeats numbered `-1`, `-2` as GitHub numbers them.
fn anchors(text: &str) -> BTreeSet<String> {
    let (prose, _) = split_fences(text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for line in prose.lines() {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug = github_slug(line[hashes..].trim().trim_end_matches('#'));
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// What is wrong with the relative links of `text`, the contents of `file`.
fn link_problems(file: &Path, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for target in link_targets(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        if target.is_empty() || target.chars().any(char::is_whitespace) {
            problems.push(format!(
                "{}: link target {target:?} is not a path",
                shown(file)
            ));
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let dest = if path.is_empty() {
            file.to_path_buf()
        } else {
            file.parent().unwrap().join(path)
        };
        if !dest.exists() {
            problems.push(format!(
                "{}: link ({target}) names {}, which does not exist",
                shown(file),
                dest.display()
            ));
            continue;
        }
        if let Some(anchor) = anchor {
            let headings = if dest.is_file() && dest.extension().is_some_and(|e| e == "md") {
                anchors(&read(&dest))
            } else {
                BTreeSet::new()
            };
            if !headings.contains(anchor) {
                problems.push(format!(
                    "{}: link ({target}): {} has no heading with the anchor #{anchor} (it has: {headings:?})",
                    shown(file),
                    shown(&dest)
                ));
            }
        }
    }
    problems
}

/// The subcommands a binary's `--help` lists under "Commands:" (empty where
/// it has none), asked once per binary and subcommand path.
struct Commands {
    cache: HashMap<Vec<String>, Vec<String>>,
}

impl Commands {
    fn new() -> Self {
        Commands {
            cache: HashMap::new(),
        }
    }

    fn exe(bin: &str) -> &'static str {
        match bin {
            "difflog" => env!("CARGO_BIN_EXE_difflog"),
            "difflog-sync" => env!("CARGO_BIN_EXE_difflog-sync"),
            other => panic!("no binary {other}"),
        }
    }

    /// `path` is the binary's name, then the subcommands so far.
    fn of(&mut self, path: &[String]) -> &[String] {
        if !self.cache.contains_key(path) {
            let out = Command::new(Self::exe(&path[0]))
                .args(&path[1..])
                .arg("--help")
                .output()
                .unwrap();
            let help = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{} --help failed: {}",
                path.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            let list = help
                .lines()
                .skip_while(|l| l.trim() != "Commands:")
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect();
            self.cache.insert(path.to_vec(), list);
        }
        &self.cache[path]
    }
}

/// Splits a shell line into commands at `&&`, `||`, `;` and `|` outside
/// quotes, after dropping a `#` comment.
fn shell_commands(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => break,
            None if c == ';' || c == '|' || (c == '&' && chars.peek() == Some(&'&')) => {
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                out.push(String::new());
                prev = ' ';
                continue;
            }
            None => {}
        }
        out.last_mut().unwrap().push(c);
        prev = c;
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `difflog …` / `difflog-sync …` (by name or path, after `VAR=value`s and
/// `sudo`), or `cargo run … --bin NAME -- …`: the binary and its arguments.
fn invocation(command: &str) -> Option<(String, Vec<String>)> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let is_assignment = |w: &str| {
        w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        })
    };
    let start = words
        .iter()
        .position(|w| !is_assignment(w) && *w != "sudo" && *w != "time" && *w != "exec")?;
    let words = &words[start..];
    let name = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
    let first = name(words[0]);
    if first == "difflog" || first == "difflog-sync" {
        return Some((first, words[1..].iter().map(|w| w.to_string()).collect()));
    }
    if words[0] == "cargo" && words.get(1) == Some(&"run") {
        let dashes = words.iter().position(|w| *w == "--")?;
        let mut bin = None;
        for (i, w) in words[..dashes].iter().enumerate() {
            if let Some(b) = w.strip_prefix("--bin=") {
                bin = Some(b.to_string());
            } else if *w == "--bin" {
                bin = words.get(i + 1).map(|b| b.to_string());
            }
        }
        let bin = bin?;
        if bin == "difflog" || bin == "difflog-sync" {
            return Some((
                bin,
                words[dashes + 1..].iter().map(|w| w.to_string()).collect(),
            ));
        }
    }
    None
}

/// What is wrong with the commands in the shell blocks of `text`, and how
/// many invocations of each binary were checked.
fn command_problems(
    file: &Path,
    text: &str,
    commands: &mut Commands,
    checked: &mut HashMap<String, usize>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (_, blocks) = split_fences(text);
    for block in blocks {
        if !["sh", "console", "", "bash", "shell"].contains(&block.info.as_str()) {
            continue;
        }
        let mut continued = false;
        for line in &block.lines {
            let was_continued = continued;
            continued = line.trim_end().ends_with('\\');
            if was_continued {
                continue;
            }
            let line = line.trim_start();
            let line = line.strip_prefix("$ ").unwrap_or(line);
            for command in shell_commands(line) {
                let Some((bin, args)) = invocation(&command) else {
                    continue;
                };
                *checked.entry(bin.clone()).or_insert(0) += 1;
                let mut path = vec![bin];
                for arg in args {
                    let subs = commands.of(&path);
                    if subs.is_empty() || arg.starts_with('-') {
                        break;
                    }
                    if !subs.contains(&arg) {
                        problems.push(format!(
                            "{}: `{command}`: `{arg}` is not a subcommand of `{}` (it has: {})",
                            shown(file),
                            path.join(" "),
                            subs.join(", ")
                        ));
                        break;
                    }
                    path.push(arg);
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_names_a_file_and_heading_that_exist() {
    let mut problems = Vec::new();
    let mut links = 0;
    for file in doc_files() {
        let text = read(&file);
        links += link_targets(&text).len();
        problems.extend(link_problems(&file, &text));
    }
    assert!(
        links >= 20,
        "only {links} links found: is the parser blind?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_difflog_command_in_the_docs_is_a_real_subcommand() {
    let mut commands = Commands::new();
    let mut checked = HashMap::new();
    let mut problems = Vec::new();
    for file in doc_files() {
        problems.extend(command_problems(
            &file,
            &read(&file),
            &mut commands,
            &mut checked,
        ));
    }
    assert!(
        problems.is_empty(),
        "made-up subcommands:\n{}",
        problems.join("\n")
    );
    let seen = |bin: &str| checked.get(bin).copied().unwrap_or(0);
    assert!(
        seen("difflog") >= 20 && seen("difflog-sync") >= 5,
        "too few commands found ({checked:?}): is the parser blind?"
    );
}

#[test]
fn the_readme_links_every_docs_page_and_the_index_every_other() {
    let files = doc_files();
    let linked = |from: &Path| -> BTreeSet<PathBuf> {
        link_targets(&read(from))
            .into_iter()
            .filter(|t| !t.contains("://"))
            .map(|t| t.split('#').next().unwrap().to_string())
            .filter(|t| !t.is_empty())
            .filter_map(|t| from.parent().unwrap().join(t).canonicalize().ok())
            .collect()
    };
    let readme = linked(&files[0]);
    let index_file = repo().join("docs/README.md");
    let index = linked(&index_file);
    for page in &files[1..] {
        let page = page.canonicalize().unwrap();
        assert!(
            readme.contains(&page),
            "README.md does not link {}",
            page.display()
        );
        if page != index_file.canonicalize().unwrap() {
            assert!(
                index.contains(&page),
                "docs/README.md does not list {}",
                page.display()
            );
        }
    }
}

// The checks themselves fail where they should.

#[test]
fn the_slug_is_githubs() {
    assert_eq!(
        github_slug("Security: what difflog trusts (nothing it reads)"),
        "security-what-difflog-trusts-nothing-it-reads"
    );
    assert_eq!(
        github_slug("Comparing runs: `difflog compare`"),
        "comparing-runs-difflog-compare"
    );
    assert_eq!(
        github_slug("Many boxes, one server"),
        "many-boxes-one-server"
    );
    assert_eq!(
        github_slug("The run directory (format v1)"),
        "the-run-directory-format-v1"
    );
    let text = "# A\n```sh\n# not a heading\n```\n## A\n";
    let found = anchors(text);
    assert_eq!(found, BTreeSet::from(["a".to_string(), "a-1".to_string()]));
}

#[test]
fn a_broken_link_or_anchor_fails_the_link_check() {
    let file = repo().join("README.md");
    let text = "See [x](docs/no-such-page.md), [y](docs/install.md#no-such-heading),\n\
                [fine](docs/install.md#getting-it-onto-an-air-gapped-box), [web](https://example.com/x),\n\
                `[code](not-a-link.md)` and\n```sh\necho [z](nor-this.md)\n```\n![pic](docs/missing.png)\n";
    let problems = link_problems(&file, text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("no-such-page.md"), "{problems:#?}");
    assert!(problems[1].contains("#no-such-heading"), "{problems:#?}");
    assert!(problems[2].contains("missing.png"), "{problems:#?}");
}

#[test]
fn a_made_up_subcommand_fails_the_command_check() {
    let file = repo().join("README.md");
    let text = "```sh\n\
                difflog frobnicate RUN          # made up\n\
                cargo run --release --bin difflog-sync -- teleport ./runs\n\
                difflog ls && ./target/release/difflog bench nonsense\n\
                FOO=1 difflog show RUN; difflog-sync status ./runs | less\n\
                difflog generate --prompt \"a; b\" \\\n    difflog nothing-on-a-continued-line\n\
                difflog --version\n\
                ```\n\
                ```python\ndifflog notchecked\n```\n";
    let mut checked = HashMap::new();
    let problems = command_problems(&file, text, &mut Commands::new(), &mut checked);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("`frobnicate`"), "{problems:#?}");
    assert!(problems[1].contains("`teleport`"), "{problems:#?}");
    assert!(
        problems[2].contains("`nonsense`") && problems[2].contains("`difflog bench`"),
        "{problems:#?}"
    );
    assert_eq!(checked.get("difflog"), Some(&6), "{checked:?}");
    assert_eq!(checked.get("difflog-sync"), Some(&2), "{checked:?}");
}
