//! The fenced code blocks of the repository's markdown, so a test can run every documented
//! example as written.

use std::path::{Path, PathBuf};

/// One fenced block: where it starts, its language tag and its text (without the fences).
#[derive(Debug, Clone)]
pub struct Block {
    /// Path relative to the repository root, e.g. `docs/starttls.md`.
    pub file: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The tag after the opening fence (`toml`, `sh`, `text`); empty when untagged.
    pub lang: String,
    /// The `## ` heading the block sits under (without the hashes); empty above the first.
    pub heading: String,
    pub text: String,
}

impl Block {
    /// The first line of the block's text: with the file, how tests name a block (stable when
    /// lines are added above it).
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The block's shell commands: continuation lines (`\` at the end) joined, blank lines and
    /// comment lines dropped. A trailing `# comment` stays: the shell that runs it ignores it.
    pub fn commands(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in self.text.lines() {
            let trimmed = line.trim();
            if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head.trim_end());
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    out.push(std::mem::take(&mut current));
                }
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }
}

/// The directory of the package whose test is running, as cargo sets it in the test's
/// environment. Read at run time rather than baked in with `env!`: a test binary that a fresh
/// clone of the same commit rebuilt into this target directory (the README test does that) would
/// otherwise look for its files in that clone, deleted once the test ends.
pub fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .expect("CARGO_MANIFEST_DIR: run the tests with cargo")
}

/// The repository root (two levels above the running test's package directory).
pub fn repo_root() -> PathBuf {
    package_dir().join("../..").canonicalize().expect("repository root")
}

/// A helper script of the running package's integration tests (`tests/support/NAME`).
pub fn support_script(name: &str) -> PathBuf {
    package_dir().join("tests/support").join(name)
}

/// README.md and every `docs/*.md`, sorted.
pub fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(root.join("README.md"));
    files.sort();
    files
}

/// Every fenced block (backticks or tildes, three or more) of `text`, a file named `file`.
pub fn blocks(file: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, Block)> = None;
    let mut heading = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence: String = trimmed.chars().take_while(|c| *c == '`' || *c == '~').collect();
        match &mut open {
            Some((opening, block)) => {
                if fence.len() >= opening.len()
                    && fence.starts_with(&opening[..1])
                    && trimmed[fence.len()..].trim().is_empty()
                {
                    out.push(open.take().expect("open block").1);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
            None if fence.len() >= 3 && fence.chars().all(|c| c == fence.as_bytes()[0] as char) => {
                let lang = trimmed[fence.len()..].split_whitespace().next().unwrap_or("").to_string();
                let block = Block {
                    file: file.to_string(),
                    line: i + 1,
                    lang,
                    heading: heading.clone(),
                    text: String::new(),
                };
                open = Some((fence, block));
            }
            None => {
                if let Some(h) = line.strip_prefix("## ") {
                    heading = h.trim().to_string();
                }
            }
        }
    }
    assert!(open.is_none(), "{file}: a fenced block is never closed");
    out
}

/// The text of the one ```sh block under the heading `## <heading>` of `markdown`; panics, saying
/// what it found, when the heading is missing or has no such block or several.
pub fn sh_block_under(markdown: &str, heading: &str) -> String {
    let under: Vec<Block> =
        blocks("", markdown).into_iter().filter(|b| b.lang == "sh" && b.heading == heading).collect();
    match under.as_slice() {
        [one] => one.text.clone(),
        [] => panic!("no ```sh block under a \"## {heading}\" heading"),
        more => panic!("{} ```sh blocks under \"## {heading}\", expected one: {more:?}", more.len()),
    }
}

/// Every block of every file of [`markdown_files`], named relative to `root`.
pub fn all_blocks(root: &Path) -> Vec<Block> {
    markdown_files(root)
        .iter()
        .flat_map(|p| {
            let name = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {name}: {e}"));
            blocks(&name, &text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_tags_and_commands() {
        let md =
            "x\n```sh\ntlsgate a \\\n  --b c   # note\n\n# only a comment\ncurl d\n```\n\n```\nraw\n```\n";
        let b = blocks("f.md", md);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].line, b[0].lang.as_str()), (2, "sh"));
        assert_eq!(b[0].commands(), vec!["tlsgate a --b c   # note".to_string(), "curl d".to_string()]);
        assert_eq!((b[1].lang.as_str(), b[1].text.as_str()), ("", "raw\n"));
    }

    #[test]
    fn finds_the_sh_block_under_a_heading() {
        let md = "## Try it\n\n```sh\nrun me\n```\n\n## Other\n\n```text\nnot me\n```\n";
        assert_eq!(sh_block_under(md, "Try it"), "run me\n");
        assert_eq!(blocks("f.md", md)[1].heading, "Other");
    }
}
