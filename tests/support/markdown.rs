//! The repository's Markdown as the docs tests read it: which files are docs, their fenced
//! blocks (language, line, text), the shell commands in a block, inline links and heading
//! anchors. Hand-written on purpose: the docs use only ``` fences, inline `[text](target)` links
//! and `#` headings, and a Markdown crate is not in the dependency tree for this alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The user and contributor docs, relative to the root: README.md, DEVELOPMENT.md,
/// BENCHMARKS.md and every docs/*.md.
pub fn doc_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "DEVELOPMENT.md", "BENCHMARKS.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

pub fn read(file: &Path) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// One fenced block.
#[derive(Debug, Clone)]
pub struct Block {
    pub file: PathBuf,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The info string after the fence (`sh`, `yaml`, or empty).
    pub lang: String,
    /// The lines between the fences, with the fence's own indentation taken off.
    pub text: String,
}

impl Block {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Every fenced block of `file`, in order.
pub fn blocks(file: &Path) -> Vec<Block> {
    let text = read(file);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = lines[i].len() - trimmed.len();
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let line = lines[i];
                let cut = line.len() - line.trim_start().len();
                body.push(&line[cut.min(indent)..]);
                i += 1;
            }
            out.push(Block {
                file: file.to_path_buf(),
                line: start + 1,
                lang: info.trim().to_string(),
                text: body.join("\n") + "\n",
            });
        }
        i += 1;
    }
    out
}

/// Is the block shell commands: tagged `sh`/`bash`/`shell`/`console`, or untagged with lines
/// that start with a `$ ` prompt (a command shown with its output)?
pub fn is_shell(block: &Block) -> bool {
    matches!(block.lang.as_str(), "sh" | "bash" | "shell" | "console")
        || (block.lang.is_empty() && block.text.lines().any(|l| l.starts_with("$ ")))
}

/// The commands of a shell block, each with its continuation lines (`\`) and here-document
/// joined into one string; comment lines dropped. In a block with `$ ` prompts only the prompted
/// lines (and their continuations) are commands, the rest is output.
pub fn commands(block: &Block) -> Vec<String> {
    shown_commands(block).into_iter().map(|c| c.text).collect()
}

/// A command as a doc shows it, and the error the doc says it ends with (its output's first
/// `Error: ` line, in a block with `$ ` prompts).
pub struct Shown {
    pub text: String,
    pub error: Option<String>,
}

/// [`commands`] with the error each is shown to end with.
pub fn shown_commands(block: &Block) -> Vec<Shown> {
    let mut out: Vec<Shown> = Vec::new();
    let prompted = block.text.lines().any(|l| l.starts_with("$ "));
    if prompted {
        for line in block.text.lines() {
            // `Error: ` from a command's failure, `error: ` from check's reports of its inputs.
            let error = line
                .strip_prefix("Error: ")
                .or_else(|| line.strip_prefix("error: "));
            if let (Some(error), Some(last)) = (error, out.last_mut())
                && last.error.is_none()
            {
                last.error = Some(error.to_string());
            }
            if let Some(text) = line.strip_prefix("$ ") {
                out.push(Shown {
                    text: text.to_string(),
                    error: None,
                });
            }
        }
    }
    let texts = command_texts(block);
    if !prompted {
        return texts
            .into_iter()
            .map(|text| Shown { text, error: None })
            .collect();
    }
    // The prompted lines, joined with their continuations.
    out.into_iter()
        .zip(texts)
        .map(|(shown, text)| Shown {
            text,
            error: shown.error,
        })
        .collect()
}

fn command_texts(block: &Block) -> Vec<String> {
    let prompted = block.text.lines().any(|l| l.starts_with("$ "));
    let mut out = Vec::new();
    let mut lines = block.text.lines();
    while let Some(line) = lines.next() {
        let line = if prompted {
            match line.strip_prefix("$ ") {
                Some(rest) => rest,
                None => continue,
            }
        } else {
            line
        };
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut command = line.trim_end().to_string();
        while command.ends_with('\\') {
            match lines.next() {
                Some(next) => {
                    command.push('\n');
                    command.push_str(next.trim_end());
                }
                None => break,
            }
        }
        // A loop or `if` runs as one command, up to its `done` / `fi`.
        let closing = match t.split_whitespace().next() {
            Some("for" | "while" | "until") => Some("done"),
            Some("if") => Some("fi"),
            _ => None,
        };
        if let Some(closing) = closing {
            for next in lines.by_ref() {
                command.push('\n');
                command.push_str(next.trim_end());
                if next.trim().starts_with(closing) {
                    break;
                }
            }
        }
        if let Some(word) = heredoc_word(&command) {
            for next in lines.by_ref() {
                command.push('\n');
                command.push_str(next);
                if next.trim() == word {
                    break;
                }
            }
        }
        out.push(command);
    }
    out
}

fn heredoc_word(command: &str) -> Option<String> {
    let (_, rest) = command.split_once("<<")?;
    let word: String = rest
        .trim_start_matches('-')
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// A command with its whitespace (and line continuations) collapsed: how the skip list names it.
pub fn normalized(command: &str) -> String {
    command
        .replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One inline link outside code.
#[derive(Debug)]
pub struct Link {
    pub file: PathBuf,
    pub line: usize,
    pub target: String,
}

/// Every inline link (`[text](target)`, images too) of `file`, outside fenced blocks and code
/// spans.
pub fn links(file: &Path) -> Vec<Link> {
    let text = read(file);
    let mut out = Vec::new();
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let prose = without_code_spans(line);
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(Link {
                file: file.to_path_buf(),
                line: n + 1,
                target: target.trim_matches(|c| c == '<' || c == '>').to_string(),
            });
            rest = &after[end..];
        }
    }
    out
}

fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The anchors GitHub gives the headings of `file` (`## 2. Pod mutation` → `2-pod-mutation`;
/// a repeated heading gets `-1`, `-2`, …).
pub fn anchors(file: &Path) -> BTreeSet<String> {
    let text = read(file);
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if in_fence {
            continue;
        }
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug = slug(heading);
        let mut unique = slug.clone();
        let mut n = 0;
        while out.contains(&unique) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
        out.insert(unique);
    }
    out
}

/// GitHub's heading slug: the rendered text (links and code marks taken off) lowercased,
/// everything but letters, digits, `-`, `_` and spaces dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    let mut rendered = String::new();
    let mut rest = heading.trim();
    // `[text](target)` renders as `text`.
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](") else {
            break;
        };
        let Some(end) = rest[open + close..].find(')') else {
            break;
        };
        rendered.push_str(&rest[..open]);
        rendered.push_str(&rest[open + 1..open + close]);
        rest = &rest[open + close + end + 1..];
    }
    rendered.push_str(rest);
    rendered
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
