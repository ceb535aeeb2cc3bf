//! Shell examples in the project's Markdown (README.md, docs/), for tests that run them as written.

/// One fenced ```sh block: the `## ` heading it sits under (without the hashes) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShBlock {
    pub heading: String,
    pub text: String,
}

/// Every ```sh block of `markdown`, in document order. Panics on a block that is never closed.
pub fn sh_blocks(markdown: &str) -> Vec<ShBlock> {
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut open: Option<String> = None;
    for line in markdown.lines() {
        match &mut open {
            Some(text) if line.trim_end() == "```" => {
                blocks.push(ShBlock { heading: heading.clone(), text: std::mem::take(text) });
                open = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None if line.trim_end() == "```sh" => open = Some(String::new()),
            None => {
                if let Some(h) = line.strip_prefix("## ") {
                    heading = h.trim().to_string();
                }
            }
        }
    }
    assert!(open.is_none(), "a ```sh block under {heading:?} is never closed");
    blocks
}

/// The one ```sh block under the heading `## <heading>`; panics, saying what it found, when the
/// heading is missing or has no block or several.
pub fn sh_block_under(markdown: &str, heading: &str) -> String {
    let under: Vec<ShBlock> = sh_blocks(markdown).into_iter().filter(|b| b.heading == heading).collect();
    match under.as_slice() {
        [one] => one.text.clone(),
        [] => panic!("no ```sh block under a \"## {heading}\" heading"),
        more => panic!("{} ```sh blocks under \"## {heading}\", expected one: {more:?}", more.len()),
    }
}
